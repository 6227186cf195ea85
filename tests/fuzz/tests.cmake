# libFuzzer targets: tests/fuzz/fuzz_<name>.c, seed corpus in tests/fuzz/corpus/<name>/.
# Built with -DKW_FUZZ=ON (clang); each registered as ctest "fuzz_<name>" running for
# KW_FUZZ_SECONDS (default 60) over a copy of the seed corpus.
if(KW_FUZZ)
  set(KW_FUZZ_SECONDS 60 CACHE STRING "Seconds each fuzz target runs under ctest")
  # The libraries under test need coverage instrumentation too, or libFuzzer only sees
  # the few edges of the harness itself and mutates blindly.
  foreach(lib kw_base kw_cel kw_authz kw_keys kw_http kw_grpc kw_proto kw_api)
    get_target_property(kind ${lib} TYPE)
    if(NOT kind STREQUAL "INTERFACE_LIBRARY")
      target_compile_options(${lib} PRIVATE -fsanitize=fuzzer-no-link)
    endif()
  endforeach()
  file(GLOB fuzz_srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_*.c)
  foreach(f ${fuzz_srcs})
    get_filename_component(fn ${f} NAME_WE)
    string(REPLACE "fuzz_" "" short ${fn})
    add_executable(${fn} ${f})
    target_compile_options(${fn} PRIVATE -fsanitize=fuzzer)
    target_link_options(${fn} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${fn} PRIVATE kw_http kw_authz kw_cel kw_keys kw_base ${KW_EXTERNAL_LIBS})
    if(short MATCHES "^grpc_")
      target_link_libraries(${fn} PRIVATE kw_grpc)
    endif()
    if(short MATCHES "^v1")
      target_link_libraries(${fn} PRIVATE kw_api)
    endif()
    add_test(NAME ${fn}
      COMMAND ${CMAKE_COMMAND} -E env bash ${CMAKE_SOURCE_DIR}/tests/fuzz/run.sh
              $<TARGET_FILE:${fn}> ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${short} ${KW_FUZZ_SECONDS})
    set_tests_properties(${fn} PROPERTIES LABELS fuzz TIMEOUT 600)
  endforeach()
endif()
