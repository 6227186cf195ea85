/* The test runner of kw_test_cel (tests register themselves with KW_TEST). */
#include "kw_test.h"

KW_TEST_MAIN
