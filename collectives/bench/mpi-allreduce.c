/* mpi-allreduce — the Open MPI baseline for tests/bench/bench-collectives.sh:
 * MPI_Allreduce (float sum, out of place) at sizes -b to -e stepping by -f,
 * timed the way bcoll-bench times libbcoll (one warm-up, a barrier, then
 * iters calls; the slowest rank counts), printing the same columns. Built
 * with Debian's mpicc by the bench script, never by make all. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t parse_size(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	if (*end == 'K' || *end == 'k')
		v *= 1024;
	else if (*end == 'M' || *end == 'm')
		v *= 1024 * 1024;
	return (size_t)v;
}

int main(int argc, char **argv)
{
	size_t b = 8, e = 64u << 20;
	double f = 2, sum_bus = 0;
	int rank, n, ch, nsz = 0, fixed = 0;
	float *send, *recv;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &n);
	while ((ch = getopt(argc, argv, "b:e:f:i:")) != -1) {
		if (ch == 'b')
			b = parse_size(optarg);
		else if (ch == 'e')
			e = parse_size(optarg);
		else if (ch == 'f')
			f = atof(optarg);
		else if (ch == 'i')
			fixed = atoi(optarg);
	}
	send = malloc(e + 4);
	recv = malloc(e + 4);
	if (rank == 0)
		printf("# mpi-allreduce: %d ranks, float sum\n#%11s %12s %9s %7s %11s %12s %12s\n", n,
		       "size", "count", "type", "redop", "time(us)", "algbw(GB/s)", "busbw(GB/s)");
	for (size_t bytes = b; bytes <= e; bytes = (size_t)(bytes * f)) {
		size_t count = bytes / 4;
		int iters = fixed ? fixed : bytes < (1u << 20) ? 200 : bytes < (16u << 20) ? 20 : 5;
		double t0, t, tmax;

		for (size_t i = 0; i < count; i++)
			send[i] = (float)((int)(((rank + 1) * 31 + i * 7) % 17) - 8);
		MPI_Allreduce(send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
		MPI_Barrier(MPI_COMM_WORLD);
		t0 = MPI_Wtime();
		for (int k = 0; k < iters; k++)
			MPI_Allreduce(send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
		t = (MPI_Wtime() - t0) / iters;
		MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
		if (rank == 0) {
			double alg = count * 4 / tmax / 1e9, bus = alg * 2 * (n - 1) / n;

			printf("%12zu %12zu %9s %7s %11.2f %12.3f %12.3f\n", count * 4, count, "float",
			       "sum", tmax * 1e6, alg, bus);
			sum_bus += bus;
			nsz++;
		}
		if ((size_t)(bytes * f) <= bytes)
			break;
	}
	if (rank == 0)
		printf("# Avg bus bandwidth    : %.3f\n", nsz ? sum_bus / nsz : 0);
	free(send);
	free(recv);
	MPI_Finalize();
	return 0;
}
