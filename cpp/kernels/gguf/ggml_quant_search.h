// The scale searches ggml's reference quantizers use to pick a block's scale
// (and min) and integer codes. They minimise a weighted squared error (absolute
// error for Q2_K's reference) over a small grid of candidate scales, refitting
// scale and min by least squares for each candidate's codes.
//
// Every operation is a separately rounded float32 operation in a fixed order
// (the file is compiled with -ffp-contract=off), so codes and scales are those
// of ggml's x86-64 build for the same inputs.
#pragma once

#include <cstdint>

namespace quantcore::kernels::gguf {

// Round to nearest, ties to even, for |f| < 2^22 (ggml's nearest_int).
int nearest_int(float f);

// Symmetric codes l in [-nmax, nmax - 1], stored as l + nmax in `codes`;
// returns the least-squares scale s (x ~ s * l) of the best of 19 candidates,
// weighted by `weights` (x^2 when null). 0 for an all-zero block.
float fit_symmetric(int n, int nmax, const float* x, uint8_t* codes, const float* weights);

// Q3_K's reference: symmetric codes as above (x^2 weights), then up to five
// passes of one-code-at-a-time improvement of the weighted fit.
float fit_symmetric_refined(int n, int nmax, const float* x, uint8_t* codes);

// Asymmetric codes in [0, nmax] with x ~ scale * l - min_out (min_out >= 0);
// candidate scales (nmax + rmin + rdelta * i) / (max - min) for i = 0..nstep,
// each refit by weighted least squares. `use_mad`: absolute instead of squared error.
float fit_with_min(int n, int nmax, const float* x, const float* weights, uint8_t* codes, float* min_out,
                   float rmin, float rdelta, int nstep, bool use_mad);

// Non-negative values x ~ scale * l, l in [0, nmax], weighted by `weights`
// (used for the sub-block scales of the importance-weighted K-quants).
float fit_nonnegative(int n, int nmax, const float* x, uint8_t* codes, const float* weights);

}  // namespace quantcore::kernels::gguf
