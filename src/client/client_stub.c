#include "client/kiteq_client.h"
