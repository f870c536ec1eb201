build/plain/dispatcher/cli.o: dispatcher/cli.c \
 dispatcher/../channels/channel.h \
 dispatcher/../channels/../dispatcher/herr.h \
 dispatcher/../config/config.h dispatcher/../config/../dispatcher/herr.h \
 dispatcher/alloc.h dispatcher/clock.h dispatcher/job.h dispatcher/herr.h \
 dispatcher/log.h dispatcher/redisq.h dispatcher/scripts.h \
 dispatcher/track.h
dispatcher/../channels/channel.h:
dispatcher/../channels/../dispatcher/herr.h:
dispatcher/../config/config.h:
dispatcher/../config/../dispatcher/herr.h:
dispatcher/alloc.h:
dispatcher/clock.h:
dispatcher/job.h:
dispatcher/herr.h:
dispatcher/log.h:
dispatcher/redisq.h:
dispatcher/scripts.h:
dispatcher/track.h:
