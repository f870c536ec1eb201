build/plain/dispatcher/log.o: dispatcher/log.c dispatcher/log.h
dispatcher/log.h:
