build/plain/dispatcher/heroldd.o: dispatcher/heroldd.c \
 dispatcher/../channels/channel.h \
 dispatcher/../channels/../dispatcher/herr.h \
 dispatcher/../channels/http.h dispatcher/../channels/channel.h \
 dispatcher/../config/config.h dispatcher/../config/../dispatcher/herr.h \
 dispatcher/alloc.h dispatcher/consumer.h dispatcher/fanout.h \
 dispatcher/job.h dispatcher/herr.h dispatcher/redisq.h \
 dispatcher/track.h dispatcher/log.h dispatcher/scripts.h
dispatcher/../channels/channel.h:
dispatcher/../channels/../dispatcher/herr.h:
dispatcher/../channels/http.h:
dispatcher/../channels/channel.h:
dispatcher/../config/config.h:
dispatcher/../config/../dispatcher/herr.h:
dispatcher/alloc.h:
dispatcher/consumer.h:
dispatcher/fanout.h:
dispatcher/job.h:
dispatcher/herr.h:
dispatcher/redisq.h:
dispatcher/track.h:
dispatcher/log.h:
dispatcher/scripts.h:
