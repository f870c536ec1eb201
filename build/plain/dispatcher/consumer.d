build/plain/dispatcher/consumer.o: dispatcher/consumer.c \
 dispatcher/consumer.h dispatcher/../config/config.h \
 dispatcher/../config/../dispatcher/herr.h dispatcher/fanout.h \
 dispatcher/../channels/channel.h \
 dispatcher/../channels/../dispatcher/herr.h dispatcher/job.h \
 dispatcher/herr.h dispatcher/redisq.h dispatcher/track.h \
 dispatcher/alloc.h dispatcher/clock.h dispatcher/log.h \
 dispatcher/scripts.h
dispatcher/consumer.h:
dispatcher/../config/config.h:
dispatcher/../config/../dispatcher/herr.h:
dispatcher/fanout.h:
dispatcher/../channels/channel.h:
dispatcher/../channels/../dispatcher/herr.h:
dispatcher/job.h:
dispatcher/herr.h:
dispatcher/redisq.h:
dispatcher/track.h:
dispatcher/alloc.h:
dispatcher/clock.h:
dispatcher/log.h:
dispatcher/scripts.h:
