# Coherence of several instances over PostgreSQL: the api module's pg_* unit tests against
# a throwaway cluster (tests/coherence/run-api-pg.sh; label pg, like unit_store_pg).
if(TARGET kw_test_api)
  add_test(NAME unit_api_pg
    COMMAND bash ${CMAKE_SOURCE_DIR}/tests/coherence/run-api-pg.sh $<TARGET_FILE:kw_test_api>)
  set_tests_properties(unit_api_pg PROPERTIES LABELS pg TIMEOUT 300 RESOURCE_LOCK postgres)
endif()
