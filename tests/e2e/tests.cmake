# End-to-end tests: pytest against the real `keyward` binary over HTTP (tests/e2e/*.py).
# Needs Debian's python3-pytest and python3-requests (stdlib otherwise).
add_test(NAME e2e
  COMMAND ${CMAKE_COMMAND} -E env KEYWARD_BIN=$<TARGET_FILE:keyward>
          /usr/bin/python3 -m pytest -q -p no:cacheprovider ${CMAKE_SOURCE_DIR}/tests/e2e)
set_tests_properties(e2e PROPERTIES LABELS e2e TIMEOUT 600)
