/* The test runner of kw_test_grpc (tests register themselves with KW_TEST). */
#include "kw_test.h"

KW_TEST_MAIN
