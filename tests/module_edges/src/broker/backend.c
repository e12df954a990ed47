/* Fixture of the module_edges test (never compiled). */
#include "store/file/file_store.h"
#include "store/store.h"
