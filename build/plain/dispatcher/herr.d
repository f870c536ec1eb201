build/plain/dispatcher/herr.o: dispatcher/herr.c dispatcher/herr.h
dispatcher/herr.h:
