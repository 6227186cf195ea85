/*
 * grpc/rpc_int.h - inside the gRPC module: the method handlers the table of rpc.c names
 * (rpc.c: PermissionsService's relationship and permission RPCs, SchemaService's read and
 * write, WatchService, health; rpc_more.c: bulk import/export and schema reflection;
 * reflect.c: gRPC server reflection) and the helpers they share. Not a public header.
 *
 * Ownership: a handler's request message is kw__grpc_invoke's, freed after the handler.
 * Threads: a handler runs on its call's thread.
 * Errors: handlers report through st (code 0: OK); helpers say below.
 */
#ifndef KW_GRPC_RPC_INT_H
#define KW_GRPC_RPC_INT_H

#include "convert.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

/* The RPC's result: KW_OK, or st filled (an emit that failed because the client left or
 * the deadline passed leaves st empty: it is filled here from rc). */
void kw__grpc_finish(int rc, kw_v1_status_t *st);
void kw__grpc_oom(kw_v1_status_t *st);
/* Decodes the consistency and waits for it (this thread blocks); false with st filled. */
bool kw__grpc_await(kw__grpc_call_t *c, const Authzed__Api__V1__Consistency *pc,
                    kw_v1_consistency_t *cons, kw_v1_status_t *st);
/* The next message of a stream of requests, decoded with d (the caller frees it with
 * protobuf_c_message_free_unpacked). NULL with *rc KW_ENOTFOUND at the stream's end, or
 * NULL with *rc another code and st filled. */
ProtobufCMessage *kw__grpc_recv_msg(kw__grpc_call_t *c, const ProtobufCMessageDescriptor *d,
                                    int *rc, kw_v1_status_t *st);

#define KW__GRPC_HANDLER(name)                                                                     \
    void kw__grpc_rpc_##name(kw__grpc_call_t *c, ProtobufCMessage *in, kw_v1_status_t *st)
/* rpc.c */
KW__GRPC_HANDLER(check);
KW__GRPC_HANDLER(check_bulk);
KW__GRPC_HANDLER(write);
KW__GRPC_HANDLER(delete);
KW__GRPC_HANDLER(read);
KW__GRPC_HANDLER(lookup_resources);
KW__GRPC_HANDLER(lookup_subjects);
KW__GRPC_HANDLER(expand);
KW__GRPC_HANDLER(read_schema);
KW__GRPC_HANDLER(write_schema);
KW__GRPC_HANDLER(watch);
KW__GRPC_HANDLER(health_check);
KW__GRPC_HANDLER(health_watch);
/* rpc_more.c */
KW__GRPC_HANDLER(import_bulk);
KW__GRPC_HANDLER(export_bulk);
KW__GRPC_HANDLER(reflect_schema);
KW__GRPC_HANDLER(computable_permissions);
KW__GRPC_HANDLER(dependent_relations);
KW__GRPC_HANDLER(diff_schema);
/* reflect.c: grpc.reflection.v1 and v1alpha (the same wire) */
KW__GRPC_HANDLER(reflection);
/* The answer to one reflection request (out and what it points to: in a, or borrowed
 * from req and the embedded descriptors). *sent: the files this stream was sent (bit i:
 * the set's i-th file), updated. KW_OK; KW_EINVAL: no request set; KW_ENOMEM. */
KW_NODISCARD int kw__grpc_reflect_answer(const Grpc__Reflection__V1__ServerReflectionRequest *req,
                                         uint64_t *sent, kw_arena_t *a,
                                         Grpc__Reflection__V1__ServerReflectionResponse *out);

#endif
