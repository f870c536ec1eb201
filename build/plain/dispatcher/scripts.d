build/plain/dispatcher/scripts.o: dispatcher/scripts.c \
 dispatcher/scripts.h dispatcher/redisq.h dispatcher/herr.h
dispatcher/scripts.h:
dispatcher/redisq.h:
dispatcher/herr.h:
