build/plain/dispatcher/job.o: dispatcher/job.c dispatcher/job.h \
 dispatcher/herr.h dispatcher/alloc.h
dispatcher/job.h:
dispatcher/herr.h:
dispatcher/alloc.h:
