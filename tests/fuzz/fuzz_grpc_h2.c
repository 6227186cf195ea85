/*
 * tests/fuzz/fuzz_grpc_h2.c - libFuzzer target for the gRPC endpoint's HTTP/2 side: the
 * input is what a client sends after the connection preface (frames: SETTINGS, HEADERS
 * with HPACK, DATA with gRPC's length-prefixed messages, RST_STREAM, WINDOW_UPDATE...),
 * fed to one connection's nghttp2 session with keyward's callbacks (header limits,
 * request bodies, framing, the data provider and trailers). Properties: no crash, leak or
 * undefined behaviour (sanitizers), and only KW_OK/KW_EINVAL/KW_ENOMEM come back.
 */
#include <stdlib.h>

#include "grpc/grpc_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int rc = kw__grpc_fuzz_feed(data, size);
    if (rc != KW_OK && rc != KW_EINVAL && rc != KW_ENOMEM)
        abort();
    return 0;
}
