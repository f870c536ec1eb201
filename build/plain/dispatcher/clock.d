build/plain/dispatcher/clock.o: dispatcher/clock.c dispatcher/clock.h
dispatcher/clock.h:
