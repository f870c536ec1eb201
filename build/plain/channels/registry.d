build/plain/channels/registry.o: channels/registry.c channels/channel.h \
 channels/../dispatcher/herr.h channels/webhook.h
channels/channel.h:
channels/../dispatcher/herr.h:
channels/webhook.h:
