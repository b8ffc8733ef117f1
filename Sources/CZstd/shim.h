#ifndef ELASTIC_CZSTD_SHIM_H
#define ELASTIC_CZSTD_SHIM_H
#include <zstd.h>
#include <zstd_errors.h>
#endif
