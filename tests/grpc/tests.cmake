# gRPC end-to-end: SpiceDB's official Node client (@authzed/authzed-node, from npm into
# tests/grpc/node_modules) drives `keyward serve --grpc-listen` (tests/grpc/grpc.test.js),
# then SpiceDB's conformance corpus over gRPC when KW_CONFORMANCE_DIR is set
# (tests/grpc/conformance.test.js, "skipped" otherwise).
# Skipped (exit 77, with the reason) when node or npm is missing or npm cannot install.
add_test(NAME e2e_grpc
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/grpc/run.sh $<TARGET_FILE:keyward>)
set_tests_properties(e2e_grpc PROPERTIES LABELS e2e TIMEOUT 900 SKIP_RETURN_CODE 77
  ENVIRONMENT "KW_CONFORMANCE_DIR=${KW_CONFORMANCE_DIR}")
