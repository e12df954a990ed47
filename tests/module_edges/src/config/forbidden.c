/* Fixture of the module_edges test (never compiled): config may not call the broker, and the
 * broker reaches the store only through store/store.h. */
#include "broker/broker.h"
#include "config/config.h"
