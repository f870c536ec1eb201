build/plain/dispatcher/redisq.o: dispatcher/redisq.c dispatcher/redisq.h \
 dispatcher/herr.h dispatcher/alloc.h dispatcher/log.h
dispatcher/redisq.h:
dispatcher/herr.h:
dispatcher/alloc.h:
dispatcher/log.h:
