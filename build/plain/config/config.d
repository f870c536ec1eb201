build/plain/config/config.o: config/config.c config/config.h \
 config/../dispatcher/herr.h config/../dispatcher/alloc.h
config/config.h:
config/../dispatcher/herr.h:
config/../dispatcher/alloc.h:
