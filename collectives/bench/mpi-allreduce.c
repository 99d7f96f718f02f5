/* mpi-allreduce — the Open MPI baseline for tests/bench/bench-collectives.sh:
 * MPI_Allreduce (float sum, out of place) at sizes -b to -e stepping by -f,
 * or with -c reduce_scatter|allgather|broadcast MPI_Reduce_scatter_block,
 * MPI_Allgather or MPI_Bcast (size is the whole buffer, as in bcoll-bench),
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

enum { C_ALLREDUCE, C_REDUCE_SCATTER, C_ALLGATHER, C_BROADCAST };

static void run(int coll, float *send, float *recv, size_t count)
{
	if (coll == C_REDUCE_SCATTER)
		MPI_Reduce_scatter_block(send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
	else if (coll == C_ALLGATHER)
		MPI_Allgather(send, (int)count, MPI_FLOAT, recv, (int)count, MPI_FLOAT,
			      MPI_COMM_WORLD);
	else if (coll == C_BROADCAST)
		MPI_Bcast(recv, (int)count, MPI_FLOAT, 0, MPI_COMM_WORLD);
	else
		MPI_Allreduce(send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}

int main(int argc, char **argv)
{
	static const char *const names[] = {"allreduce", "reduce_scatter", "allgather", "broadcast"};
	int coll = C_ALLREDUCE;
	size_t b = 8, e = 64u << 20;
	double f = 2, sum_bus = 0;
	int rank, n, ch, nsz = 0, fixed = 0;
	float *send, *recv;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &n);
	while ((ch = getopt(argc, argv, "b:e:f:i:c:")) != -1) {
		if (ch == 'c')
			for (int k = 0; k < 4; k++)
				coll = strcmp(optarg, names[k]) ? coll : k;
		else if (ch == 'b')
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
		printf("# mpi-allreduce: %s, %d ranks, float sum\n#%11s %12s %9s %7s %11s %12s %12s\n",
		       names[coll], n, "size", "count", "type", "redop", "time(us)", "algbw(GB/s)",
		       "busbw(GB/s)");
	for (size_t bytes = b; bytes <= e; bytes = (size_t)(bytes * f)) {
		int per_rank = coll == C_REDUCE_SCATTER || coll == C_ALLGATHER;
		size_t count = bytes / 4 / (per_rank ? n : 1), all = count * (per_rank ? n : 1);
		int iters = fixed ? fixed : bytes < (1u << 20) ? 200 : bytes < (16u << 20) ? 20 : 5;
		double t0, t, tmax;

		for (size_t i = 0; i < all; i++)
			send[i] = recv[i] = (float)((int)(((rank + 1) * 31 + i * 7) % 17) - 8);
		run(coll, send, recv, count);
		MPI_Barrier(MPI_COMM_WORLD);
		t0 = MPI_Wtime();
		for (int k = 0; k < iters; k++)
			run(coll, send, recv, count);
		t = (MPI_Wtime() - t0) / iters;
		MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
		if (rank == 0) {
			double alg = all * 4 / tmax / 1e9;
			double bus = coll == C_BROADCAST ? alg : alg * (n - 1) / n *
				     (coll == C_ALLREDUCE ? 2 : 1);

			printf("%12zu %12zu %9s %7s %11.2f %12.3f %12.3f\n", all * 4, count, "float",
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
