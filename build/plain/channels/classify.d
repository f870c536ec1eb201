build/plain/channels/classify.o: channels/classify.c channels/channel.h \
 channels/../dispatcher/herr.h
channels/channel.h:
channels/../dispatcher/herr.h:
