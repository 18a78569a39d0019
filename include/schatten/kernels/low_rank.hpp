// SPDX-License-Identifier: Apache-2.0
/// \file
/// The low-rank power-iteration step of Dion (Ahn et al., arXiv 2504.05295, Algorithm 1; the
/// reference dion/dion_reference.py and dion/dion_simple.py of microsoft/dion): one amortised
/// power iteration on a momentum matrix, its error feedback, and the orthonormal-factor update
/// P Qᵀ. GEMMs through Kokkos Kernels on the default execution space; the m × k panel's QR on the
/// host in double. Not in algorithms.md: the choices where the reference is silent or
/// GPU-specific are marked [P] (docs/kernels/low_rank.md).
#pragma once

#include <cstddef>
#include <functional>
#include <type_traits>
#include <utility>

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"
#include "schatten/core/workspace.hpp"

namespace schatten {

/// The mean over data-parallel replicas of `count` floats, in place, in host memory (on a GPU
/// build the kernel stages its device panels through the host): on return every replica holds
/// the same values, (1/n)·Σ of the n replicas' inputs. Returns ok, or a status the kernel passes on.
/// distributed::DistributedPartition provides one over MPI (Layout::unreduced); a single process leaves it
/// empty.
using ReplicaAverage = std::function<Status(float* data, std::size_t count)>;

/// A collective over the replicas' consecutive blocks, in place in host memory: block r holds
/// counts[r] floats (r ∈ [0, Replicas::size)) and starts where block r − 1 ends (Σ counts floats
/// at `data`). Same calling rules and return as ReplicaAverage.
using ReplicaExchange = std::function<Status(float* data, const std::size_t* counts)>;

/// The replicas' collectives (low_rank_power_step's "Replicas"). `average` alone: every replica
/// orthonormalises every panel. With `average_scatter` and `gather` as well (both or neither), and
/// this replica's `rank` among `size`, low_rank_power_step_batch splits the batch's QRs across the
/// replicas as microsoft/dion's dion_update_ddp does (its reduce-scatter and all-gather):
/// - `average_scatter`: replica r's block receives the replicas' mean of that block (the other
///   blocks may hold anything afterwards);
/// - `gather`: every replica receives every replica's block r from replica r.
/// Convertible from a ReplicaAverage (or any callable that makes one): `o.replicas = average`.
struct Replicas {
  ReplicaAverage average;
  ReplicaExchange average_scatter;
  ReplicaExchange gather;
  int rank = 0;  ///< this replica, in [0, size)
  int size = 1;  ///< the number of replicas n (≥ 1)

  Replicas() = default;
  template <class F, std::enable_if_t<std::is_constructible_v<ReplicaAverage, F>, int> = 0>
  Replicas(F f) : average(std::move(f)) {}  // NOLINT: implicit, see above
  /// Set: the call is one replica's (an `average` is given).
  explicit operator bool() const { return static_cast<bool>(average); }
  /// The QRs are split across the replicas (scatter and gather given, more than one replica).
  bool split() const { return average && average_scatter && gather && size > 1; }
};

struct LowRankStepOptions {
  int power_iterations = 1;  ///< t ≥ 1 (the reference's power_iters), at most 100
  double feedback = 0.05;    ///< γ = 1 − μ ∈ [0, 1]: the fraction of the captured part removed from M
  double eps = 1e-8;         ///< ε > 0 of the column normalisation (the reference's epsilon)
  /// Try a Cholesky QR2 on the execution space before the host Householder QR (below); false:
  /// always the Householder QR.
  bool cholesky_qr = true;
  /// Empty: one process. Set: the compressed data-parallel step ("Replicas" below).
  Replicas replicas;
  /// Empty: M is the caller's float array `m` (the default). Set: the caller keeps M in another
  /// storage (optim::DionDirection's bf16 M) and passes its float widening as `m`, which `u` may
  /// then be (the same array, not a partial overlap: U is written over M′). Called once for each
  /// member b whose M is not zero, in member order, after the checks and the collectives, once
  /// its feedback B ← B − γ P Rᵀ is final and before its U is written: `m` is that member's m as
  /// passed, holding M′ (in m's memory: staged back to the host first on a GPU build), for the
  /// caller to store. A member whose M is zero is not passed (M′ = M; its U = 0 then overwrites
  /// m when u is m). Must not fail or throw: everything before it has passed, so the call's
  /// status is ok. Cost: the staging of M′ to host memory before U on a GPU build (r·c floats).
  std::function<void(index_t member, const MatrixRef<float>& m)> store_momentum;
};

/// Workspace bytes of low_rank_power_step() for an r × c momentum and rank k (P, R and a k × k
/// Gram, in the memory of the default execution space; with `replicas`, one more L × k panel).
std::size_t low_rank_workspace_bytes(index_t rows, index_t cols, index_t rank, bool replicas = false);
/// Workspace bytes of low_rank_power_step_batch() for `batch` members of that shape and rank:
/// batch P and R panels (each P followed by k + 2 floats), one Gram, and with `replicas` one
/// more L × k panel.
std::size_t low_rank_batch_workspace_bytes(index_t rows, index_t cols, index_t rank, index_t batch,
                                           bool replicas = false);
/// Host bytes of low_rank_power_step_batch() for `batch` members of that shape and rank called
/// with `replicas` (Workspace::reserve()'s `host_bytes`; a single call is a batch of one): the
/// members' records and kept-column flags, nine k-vectors of doubles, k + 2 floats, the
/// Householder QR's L × k panel of doubles (8·L·k bytes), with split QRs one count per replica
/// and, on a GPU build, that panel in float and with replicas the host staging of their
/// collectives (all P blocks or all R panels: about 4·batch·L·k bytes). A call whose workspace
/// holds these and low_rank_batch_workspace_bytes() allocates nothing on the host (on a GPU
/// build, but for staging copies of host arrays).
std::size_t low_rank_host_bytes(index_t rows, index_t cols, index_t rank, index_t batch = 1,
                                const Replicas& replicas = {});

/// One step of Dion's amortised power iteration, in place. With B = M when r ≥ c and B = Mᵀ
/// when r < c (the reference's transpose: B is L × S, L = max(r, c) ≥ S = min(r, c)), and the
/// right factor Q (S × k, 1 ≤ k ≤ S):
///
///   t times:  P ← orth(B Q);  R ← Bᵀ P;  Q ← R          (P: L × k orthonormal, R: S × k)
///   B ← B − γ P Rᵀ                                        (error feedback: M keeps what P missed)
///   Q ← R diag(1/(‖R_{:,j}‖₂ + ε))                        (column normalisation)
///   U ← P Qᵀ  (as r × c: P Qᵀ when r ≥ c, Q Pᵀ otherwise)
///
/// orth() is a thin QR. [P] Two ways, which agree to rounding, the carried Q included (both give
/// the thin QR with a positive diagonal, which is unique):
/// - a Householder QR in double on the host (the reference's qr_method="qr"): exact to rounding
///   whatever P's conditioning and rank, and it decides the columns at the rounding floor
///   (below). On a GPU, L·k floats cross the bus each way.
/// - first, with `cholesky_qr` (the default), a Cholesky QR2 in float on the execution space
///   (GEMMs, a k × k Cholesky, triangular solves; 3k doubles read back: the first Gram's
///   diagonal and both Cholesky diagonals). It is kept only when both Cholesky factorisations
///   succeed, the first pass leaves P within 0.5 of orthonormal, and every |R_jj| is more than
///   100 times the floor below (with its leak term); otherwise the Householder QR runs.
/// The reference's default, a randomized Cholesky QR ("rcqr"), is not used: it is not
/// rank-revealing. With full rank k = S, t = 1 and B Q of full rank, P spans B's range, so
/// P Rᵀ = P Pᵀ B = B and B ← (1 − γ)B = μB: the momentum of Muon without Nesterov.
///
/// [P] Columns at the rounding floor. A column j of B X whose part orthogonal to the columns
/// before it (|R_jj| of the unpivoted QR) is at most 8·√S·u·‖B‖_F·‖x_j‖₂ (u = 2⁻²⁴;
/// √S·u·‖B‖_F‖x_j‖ is the size of the float GEMM's rounding of that column) is dropped for the
/// step: p_j = 0 (it adds nothing to U or to the feedback), and Q_j keeps its value, so that a
/// momentum of higher rank can use it at the next step. The later columns are orthogonalised
/// against the kept columns only (the QR is that of the kept columns), since a dropped column
/// may still hold a little of B's range, which they must not lose; and column j's floor also
/// counts what the kept columns' rounding leaks into it, Σ_i |R_ij|·floor_i/|R_ii| (a kept
/// column is tilted by about floor_i/|R_ii|; docs/kernels/low_rank.md has the measurements).
/// Without the floor, as in the reference, a rank-deficient momentum (a rank-1 gradient at the
/// first step) has the QR complete P with directions orthogonal to B's range, whose
/// R_j = Bᵀ p_j is rounding noise that the column normalisation blows up into unit rank-one
/// terms of U. An all-zero M drops every column: U = 0, M and Q unchanged (the reference's
/// fix_all_zero_or_nan). The factor 8 is measured
/// (bench/low_rank_floor.cpp, docs/kernels/low_rank.md): over 840 Gaussian rank-deficient B
/// (140 seeds, 9 × 6 to 4096 × 1024 and 2048 × 2048), the largest rounding column exceeded it 3
/// times (at most 15.2) and B's weakest direction never fell below it (at least 10.5). In
/// singular values: with the first step's Gaussian Q (‖x_j‖ ≈ √S) directions below about
/// 8·S·u·‖B‖_F are at the floor; once Q's columns are unit and aligned, below about
/// 8·√S·u·‖B‖_F (1.3e-5·‖B‖_F at S = 768, where Newton–Schulz leaves them near zero as well).
///
/// **Replicas** (`replicas` set; microsoft/dion's compressed all-reduce for data parallelism,
/// dion.py `dion_update_ddp`). Each of n replicas passes its own momentum M_i (its own,
/// un-reduced gradients summed in) and the same Q; the step is that of the mean M̄ = (1/n)·Σ M_i,
/// while M itself is never communicated: the panels are averaged instead, P̄ = mean(B_i X) before
/// each QR and R̄ = mean(B_iᵀ P̄) after it ((L + S)·k + 1 floats per iteration against L·S for
/// the gradient). The feedback B_i ← B_i − γ P̄ R̄ᵀ is local, so mean(M_i) follows the one-process
/// recursion of the mean gradient exactly in exact arithmetic (everything is linear in M); only
/// the float rounding differs (the sums' order). [P] The rounding floor uses the mean of the
/// replicas' ‖B_i‖_F (each replica's GEMM rounds at its own ‖B_i‖; carried in the first
/// average as one more float). Everything after an average is a deterministic function of
/// averaged values and of Q, so replicas running the same build stay bit-identical (the caller
/// verifies: DistributedPartition compares the updates' hashes). Protocol, so that no replica
/// waits alone: a call that passes the argument checks (shapes, options and Q, which every
/// replica sees alike) calls `replicas.average` 2t times on every replica, and stops earlier
/// only right after an average, on what it delivered, so on every replica together: a local
/// NaN/Inf in M_i (M_i + G_i overflowed) travels through the first average as NaN and every
/// replica returns non_finite_input; P̄ or R̄ beyond float → out_of_range everywhere;
/// an all-zero M̄ gives U = 0 (M and Q kept) everywhere. One failure is this replica's
/// alone: a host allocation refused (out_of_memory) stops the call there, between two
/// collectives, and the other replicas go on to the next one. The collectives must therefore
/// tolerate a replica that stops: those of distributed::DistributedPartition first agree that
/// no replica has stopped and return the stopped one's status instead of moving data
/// (ReplicaCollectives in mpi_step.hpp), which the call passes on. Reserve the workspace
/// beforehand (low_rank_workspace_bytes() and low_rank_host_bytes(); DionDirection does at
/// init()): on a workspace reserved for it the call allocates nothing on the host of its own,
/// so on Kokkos 3.4 such a failure cannot happen; Kokkos 4 allocates inside its own calls
/// (execution-space instances, named fences, Kokkos Kernels' profiling regions), where it can
/// (docs/reliability.md, "Heap exhaustion").
///
/// Arguments: `m` (r × c, in/out), `q` (k × S holding Qᵀ — row j is Q's column j —, in/out) and
/// `u` (r × c, out), contiguous row-major, all in one memory kind (host memory is staged on a GPU
/// build), not overlapping, except u = m with `store_momentum` (LowRankStepOptions). Bad input: NaN/Inf in M
/// or Q → non_finite_input; a P or R that overflows float (‖M‖ near FLT_MAX) → out_of_range; shapes, strides,
/// t or γ or ε outside their ranges → invalid_argument; nothing is written unless the status is ok.
///
/// Cost: (2t + 2) GEMMs of r·c·k (B Q and Bᵀ P per iteration, the feedback P Rᵀ and U), and per
/// iteration the Cholesky QR2 (about 6·L·k² flops on the execution space) or the host
/// Householder QR (about 4·L·k² host flops in double, unblocked, in place in the host scratch;
/// plus one more GEMM of B Q when the Cholesky QR was tried), and O(rc + (r + c)k) for the checks
/// and norms. Memory: low_rank_workspace_bytes() and low_rank_host_bytes(), which the call grows
/// `workspace` to first (reserve them beforehand for a call that allocates nothing). Accuracy:
/// the GEMMs' float rounding, P orthonormal to O(k·u) (Cholesky QR2) or to double rounding
/// (Householder), and the column norms in double. Synchronous.
Status low_rank_power_step(MatrixRef<float> m, MatrixRef<float> q, MatrixRef<float> u,
                           const LowRankStepOptions& options = {}, Workspace* workspace = nullptr);

/// low_rank_power_step() on `batch` ≥ 1 members of one shape and rank at once: member b is
/// (m[b], q[b], u[b]), each checked as low_rank_power_step() checks its arguments (and against
/// member 0's shapes and memory kind). Every member gets the single call's arithmetic (the same
/// bits as a call of its own in one process); what the batch adds is one collective per stage
/// for all members with replicas, and with split QRs (Replicas::split()) the division of the
/// QRs: replica r orthonormalises the members [⌊r·g/n⌋, ⌊(r + 1)·g/n⌋), and per iteration
///   P_b = B_b X_b for every b  →  average_scatter (each replica's members' means reach it)
///   →  QR of its own members   →  gather (each member's P̄, its QR's status and kept columns)
///   →  R_b = B_bᵀ P̄_b for every b  →  average (all R panels in one call).
/// P̄ then comes from one replica, so the replicas hold its bits alike whatever their MPI's sums.
/// The protocol of "Replicas" holds for the batch as a whole: a call that passes the checks makes
/// the same t·(2 or 3) collective calls on every replica (fewer only when it stops right after
/// a collective, on what it delivered: the first failing member's status, in member order, on
/// every replica); an M̄ that is zero gives that member U = 0 (M and Q kept) and the others go on.
/// Nothing is written unless the status is ok. Extra traffic over separate calls with split QRs:
/// the record, k + 2 floats per member and iteration (one of which the first iteration of a
/// separate call sends too: the carried norm). Cost: the sum of the members' GEMMs, and
/// of the QRs 1/n of the batch's on each replica (at most ⌈g/n⌉ members).
Status low_rank_power_step_batch(const MatrixRef<float>* m, const MatrixRef<float>* q,
                                 const MatrixRef<float>* u, index_t batch,
                                 const LowRankStepOptions& options = {}, Workspace* workspace = nullptr);

}  // namespace schatten
