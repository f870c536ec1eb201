build/plain/dispatcher/alloc.o: dispatcher/alloc.c dispatcher/alloc.h
dispatcher/alloc.h:
