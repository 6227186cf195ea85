# Coherence of several instances over PostgreSQL: the sync module's pg_* unit tests against
# a throwaway cluster (tests/coherence/run-sync-pg.sh; label pg, like unit_store_pg).
if(TARGET kw_test_sync)
  add_test(NAME unit_sync_pg
    COMMAND bash ${CMAKE_SOURCE_DIR}/tests/coherence/run-sync-pg.sh $<TARGET_FILE:kw_test_sync>)
  set_tests_properties(unit_sync_pg PROPERTIES LABELS pg TIMEOUT 300 RESOURCE_LOCK postgres)
endif()
