# Conformance: `keyward validate` on SpiceDB's own validation files (the caveat and
# expiration ones of spicedb-caveats/ included: every one must pass) and on the default
# schema's validation file (tests/fixtures/agentex.validation.yaml). One ctest per file, so
# a failure names the file. Plus validate's own failure paths (tests/fixtures/validate/) and a small smoke run
# of the engine benchmark (LABELS bench).
#
# SpiceDB's files are an optional input, not part of the repository: KW_CONFORMANCE_DIR
# (CMakeLists.txt) names a folder holding spicedb/, spicedb-exhaustive/ and
# spicedb-caveats/. Unset, one entry stands in for them, which ctest lists as skipped under
# a name that says why.
set(KW_CHECK ${CMAKE_SOURCE_DIR}/tests/conformance/check.sh)

function(kw_conformance name mode file)
  add_test(NAME ${name} COMMAND bash ${KW_CHECK} ${mode} $<TARGET_FILE:keyward> ${file} ${ARGN})
  set_tests_properties(${name} PROPERTIES LABELS conformance TIMEOUT 120)
endfunction()

set(suites spicedb spicedb-exhaustive spicedb-caveats)
if(KW_CONFORMANCE_DIR)
  if(NOT IS_ABSOLUTE "${KW_CONFORMANCE_DIR}")
    message(FATAL_ERROR "KW_CONFORMANCE_DIR=${KW_CONFORMANCE_DIR}: give an absolute path")
  endif()
  foreach(suite ${suites})
    file(GLOB files CONFIGURE_DEPENDS ${KW_CONFORMANCE_DIR}/${suite}/*.yaml)
    if(NOT files)
      message(FATAL_ERROR "KW_CONFORMANCE_DIR=${KW_CONFORMANCE_DIR}: no ${suite}/*.yaml there "
        "(the folder must hold spicedb/, spicedb-exhaustive/ and spicedb-caveats/)")
    endif()
    foreach(f ${files})
      get_filename_component(n ${f} NAME_WE)
      kw_conformance(conformance_${suite}_${n} pass ${f})
    endforeach()
  endforeach()
else()
  add_test(NAME conformance_spicedb_skipped_KW_CONFORMANCE_DIR_unset
    COMMAND ${CMAKE_COMMAND} -E echo "skipped: the SpiceDB conformance corpus is not given; "
            "set KW_CONFORMANCE_DIR to a folder holding spicedb/, spicedb-exhaustive/ and "
            "spicedb-caveats/")
  set_tests_properties(conformance_spicedb_skipped_KW_CONFORMANCE_DIR_unset PROPERTIES
    LABELS conformance SKIP_REGULAR_EXPRESSION "^skipped: ")
endif()
kw_conformance(conformance_agentex pass
  ${CMAKE_SOURCE_DIR}/tests/fixtures/agentex.validation.yaml)

# validate's own behaviour on known-good and known-bad fixtures.
set(fx ${CMAKE_SOURCE_DIR}/tests/fixtures/validate)
kw_conformance(validate_ok_expected_relations pass ${fx}/ok_expected_relations.yaml)
kw_conformance(validate_ok_multi_document pass ${fx}/ok_multi_document.yaml)
kw_conformance(validate_ok_arrow_target_on_no_type pass ${fx}/ok_arrow_target_on_no_type.yaml)
kw_conformance(validate_ok_wildcard_rules pass ${fx}/ok_wildcard_rules.yaml)
kw_conformance(validate_bad_wildcard_arrow fail ${fx}/bad_wildcard_arrow.yaml
  "schema:6:30:" "finds the wildcard")
kw_conformance(validate_wrong_assertion fail ${fx}/wrong_assertion.yaml
  "assertTrue failed: document:d#view@user:mallory"
  "assertFalse failed: document:d#view@user:ann")
kw_conformance(validate_wrong_expected_relations fail ${fx}/wrong_expected_relations.yaml
  "expected subject [user:zed] was not found"
  "found subject [user:carl] which is not listed")
kw_conformance(validate_bad_schema fail ${fx}/bad_schema.yaml "schema:3:")
kw_conformance(validate_bad_relationship fail ${fx}/bad_relationship.yaml
  "relationship 2" "column")
kw_conformance(validate_ok_assertion_context pass ${fx}/ok_assertion_context.yaml)
kw_conformance(validate_ok_caveats pass ${fx}/ok_caveats.yaml)
kw_conformance(validate_wrong_caveats fail ${fx}/wrong_caveats.yaml
  "assertTrue failed: document:d#view@user:ann (the check answered conditional: missing n)"
  "assertCaveated failed: document:d#view@user:carl (the check answered yes)"
  "expected subject [user:dan] was not found"
  "found subject [user:dan[...]] which is not listed")
kw_conformance(validate_bad_assertion_context fail ${fx}/bad_assertion_context.yaml
  "invalid caveat context: expected a JSON value, found 't'"
  "cannot specify a caveat on an assertion"
  "assertCaveated failed: document:d#viewer@user:ann (the check answered yes)")
kw_conformance(validate_missing_file fail ${fx}/does-not-exist.yaml "cannot read")
add_test(NAME validate_usage COMMAND bash ${KW_CHECK} usage $<TARGET_FILE:keyward>)
set_tests_properties(validate_usage PROPERTIES LABELS conformance)

# A quick run of the engine benchmark (1% of agents-1M); it aborts on any wrong answer.
if(EXISTS ${CMAKE_SOURCE_DIR}/bench/authz_bench.c)
  add_test(NAME bench_authz_smoke
    COMMAND authz_bench --scale 0.01 --runs 20 ${CMAKE_SOURCE_DIR}/src/api/agentex.zed)
  set_tests_properties(bench_authz_smoke PROPERTIES LABELS bench TIMEOUT 300)
endif()
