# Conformance: `keyward validate` on SpiceDB's own validation files (shared/ lives beside
# the source tree: ${CMAKE_SOURCE_DIR}/../shared), on the default schema's validation file,
# and on the caveat files (which must fail cleanly with "not supported yet"). One ctest per
# file, so a failure names the file. Plus validate's own failure paths (tests/fixtures/
# validate/) and a small smoke run of the engine benchmark (LABELS bench).
set(KW_SHARED_DIR ${CMAKE_SOURCE_DIR}/../shared)
set(KW_CHECK ${CMAKE_SOURCE_DIR}/tests/conformance/check.sh)

function(kw_conformance name mode file)
  add_test(NAME ${name} COMMAND bash ${KW_CHECK} ${mode} $<TARGET_FILE:keyward> ${file} ${ARGN})
  set_tests_properties(${name} PROPERTIES LABELS conformance TIMEOUT 120)
endfunction()

foreach(suite spicedb spicedb-exhaustive spicedb-caveats)
  file(GLOB files CONFIGURE_DEPENDS ${KW_SHARED_DIR}/conformance/${suite}/*.yaml)
  if(NOT files)
    message(WARNING "conformance: no files in ${KW_SHARED_DIR}/conformance/${suite}")
  endif()
  if(suite STREQUAL "spicedb-caveats")
    set(mode unsupported)
  else()
    set(mode pass)
  endif()
  foreach(f ${files})
    get_filename_component(n ${f} NAME_WE)
    kw_conformance(conformance_${suite}_${n} ${mode} ${f})
  endforeach()
endforeach()
kw_conformance(conformance_agentex pass ${KW_SHARED_DIR}/spec/agentex.validation.yaml)

# validate's own behaviour on known-good and known-bad fixtures.
set(fx ${CMAKE_SOURCE_DIR}/tests/fixtures/validate)
kw_conformance(validate_ok_expected_relations pass ${fx}/ok_expected_relations.yaml)
kw_conformance(validate_ok_multi_document pass ${fx}/ok_multi_document.yaml)
kw_conformance(validate_wrong_assertion fail ${fx}/wrong_assertion.yaml
  "assertTrue failed: document:d#view@user:mallory"
  "assertFalse failed: document:d#view@user:ann")
kw_conformance(validate_wrong_expected_relations fail ${fx}/wrong_expected_relations.yaml
  "expected subject [user:zed] was not found"
  "found subject [user:carl] which is not listed")
kw_conformance(validate_bad_schema fail ${fx}/bad_schema.yaml "schema:3:")
kw_conformance(validate_bad_relationship fail ${fx}/bad_relationship.yaml
  "relationship 2" "column")
kw_conformance(validate_caveat_assertion unsupported ${fx}/caveat_assertion.yaml)
kw_conformance(validate_missing_file fail ${fx}/does-not-exist.yaml "cannot read")
add_test(NAME validate_usage COMMAND bash ${KW_CHECK} usage $<TARGET_FILE:keyward>)
set_tests_properties(validate_usage PROPERTIES LABELS conformance)

# A quick run of the engine benchmark (1% of agents-1M); it aborts on any wrong answer.
if(EXISTS ${CMAKE_SOURCE_DIR}/bench/authz_bench.c)
  add_test(NAME bench_authz_smoke
    COMMAND authz_bench --scale 0.01 --runs 20 ${KW_SHARED_DIR}/spec/agentex.zed)
  set_tests_properties(bench_authz_smoke PROPERTIES LABELS bench TIMEOUT 300)
endif()
