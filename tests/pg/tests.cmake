# PostgreSQL tests: the store's pg_* unit tests against a throwaway cluster started by
# tests/pg/run-unit.sh (needs Debian's postgresql server package; label pg).
if(TARGET kw_test_store)
  add_test(NAME unit_store_pg
    COMMAND bash ${CMAKE_SOURCE_DIR}/tests/pg/run-unit.sh $<TARGET_FILE:kw_test_store>)
  set_tests_properties(unit_store_pg PROPERTIES LABELS pg TIMEOUT 300 RESOURCE_LOCK postgres)
endif()
