build/plain/channels/http.o: channels/http.c channels/http.h \
 channels/channel.h channels/../dispatcher/herr.h \
 channels/../dispatcher/alloc.h channels/../dispatcher/log.h
channels/http.h:
channels/channel.h:
channels/../dispatcher/herr.h:
channels/../dispatcher/alloc.h:
channels/../dispatcher/log.h:
