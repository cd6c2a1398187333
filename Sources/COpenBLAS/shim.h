#include <cblas.h>
/* Thread control lives outside cblas.h's standard part in some builds. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
/* Ends OpenBLAS's worker threads (an OpenBLAS extension; the next multi-threaded call starts
   them again). */
int blas_thread_shutdown_(void);
