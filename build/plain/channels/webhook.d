build/plain/channels/webhook.o: channels/webhook.c channels/webhook.h \
 channels/channel.h channels/../dispatcher/herr.h \
 channels/../config/config.h channels/../config/../dispatcher/herr.h \
 channels/../dispatcher/alloc.h channels/../dispatcher/log.h \
 channels/http.h
channels/webhook.h:
channels/channel.h:
channels/../dispatcher/herr.h:
channels/../config/config.h:
channels/../config/../dispatcher/herr.h:
channels/../dispatcher/alloc.h:
channels/../dispatcher/log.h:
channels/http.h:
