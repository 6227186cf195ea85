# The official Node client's own test suite (@authzed/authzed-node's dist/src/*.test.js,
# vitest, both pinned in tests/authzed-node/package-lock.json) against
# `keyward serve-testing` on localhost:50051 (tests/authzed-node/run.sh). Skipped (exit 77,
# with the reason) when node or npm is missing or npm cannot install. RUN_SERIAL: it needs
# the fixed ports 50051, 50052 and 8443.
add_test(NAME e2e_authzed_node
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/authzed-node/run.sh $<TARGET_FILE:keyward>)
set_tests_properties(e2e_authzed_node PROPERTIES LABELS e2e TIMEOUT 900 SKIP_RETURN_CODE 77
  RUN_SERIAL TRUE)
