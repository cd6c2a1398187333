#include <cblas.h>
/* Thread control lives outside cblas.h's standard part in some builds. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
