// SPDX-License-Identifier: Apache-2.0
/// \file
/// The polar configurations every property suite runs, with the coefficient rows the oracle
/// needs to predict their output.
#pragma once

#include <string>
#include <vector>

#include "schatten/kernels/polar.hpp"
#include "support/oracle.hpp"

namespace schatten::test {

struct MethodCase {
  std::string name;
  PolarOptions options;
};

inline std::vector<MethodCase> polar_methods() {
  std::vector<MethodCase> m;
  auto add = [&](const char* name, PolarMethod method, const CoefficientSchedule& s, int T,
                 std::vector<int> restarts = {2}) {
    PolarOptions o;
    o.method = method;
    o.schedule = s;
    o.iterations = T;
    o.gram_restarts = std::move(restarts);
    m.push_back({name, o});
  };
  add("ns_keller_jordan_5", PolarMethod::newton_schulz, schedules::keller_jordan(), 5);
  add("ns_classical_cubic_12", PolarMethod::newton_schulz, schedules::classical_cubic(), 12);
  add("ns_you_jiacheng_5", PolarMethod::newton_schulz, schedules::you_jiacheng(), 5);
  add("polar_express_5", PolarMethod::polar_express, schedules::polar_express(), 5);
  add("polar_express_8", PolarMethod::polar_express, schedules::polar_express(), 8);
  add("polar_express_deployed_5", PolarMethod::polar_express, schedules::polar_express_5(), 5);
  add("gram_ns_polar_express_5", PolarMethod::gram_newton_schulz, schedules::polar_express(), 5);
  add("gram_ns_keller_jordan_5_no_restart", PolarMethod::gram_newton_schulz, schedules::keller_jordan(), 5,
      {});
  add("gram_ns_polar_express_8_restarts_2_5", PolarMethod::gram_newton_schulz, schedules::polar_express(), 8,
      {2, 5});
  // Schatten-4 normalisation (the first Gram reused by either iteration), with eps ≠ 0 so that
  // its place in the formula is checked too.
  CoefficientSchedule kj4 = schedules::keller_jordan(), pe4 = schedules::polar_express();
  kj4.normalization.kind = pe4.normalization.kind = Normalization::Kind::schatten4;
  kj4.normalization.eps = 1e-7;
  add("ns_keller_jordan_5_schatten4", PolarMethod::newton_schulz, kj4, 5);
  add("gram_ns_polar_express_5_schatten4", PolarMethod::gram_newton_schulz, pe4, 5);
  // AOL row scaling (the target becomes polar(D A)), Turbo-Muon's 4 steps; eps ≠ 0 and the
  // Polar Express safety 1.01 for the places of both in d_i.
  CoefficientSchedule kja = schedules::keller_jordan(), pea = schedules::polar_express();
  kja.normalization.kind = pea.normalization.kind = Normalization::Kind::aol;
  kja.normalization.eps = 1e-7;
  add("ns_keller_jordan_4_aol", PolarMethod::newton_schulz, kja, 4);
  add("gram_ns_polar_express_5_aol", PolarMethod::gram_newton_schulz, pea, 5);
  return m;
}

/// polar_methods() and QDWH (default options): every method polar() dispatches to, for the
/// properties that hold for each (the dual-norm scaling, scaling to the ends of the range).
inline std::vector<MethodCase> polar_methods_and_qdwh() {
  std::vector<MethodCase> m = polar_methods();
  PolarOptions qd;
  qd.method = PolarMethod::qdwh;
  m.push_back({"qdwh", qd});
  return m;
}

/// The rows of the schedule polar() uses, in the oracle's own type.
inline std::vector<PolyStep> oracle_steps(const PolarOptions& o) {
  std::vector<PolyStep> rows;
  for (const OddQuintic& p : resolved_schedule(o).steps)
    rows.push_back({p.a, p.b, p.c});
  return rows;
}

}  // namespace schatten::test
