#ifndef ELASTIC_COPENBLAS_SHIM_H
#define ELASTIC_COPENBLAS_SHIM_H
#include <cblas.h>
/* OpenBLAS extensions: thread count control. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
#endif
