build/plain/dispatcher/track.o: dispatcher/track.c dispatcher/track.h \
 dispatcher/herr.h dispatcher/redisq.h
dispatcher/track.h:
dispatcher/herr.h:
dispatcher/redisq.h:
