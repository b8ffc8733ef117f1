// Matrix multiply: C = alpha·op(A)·op(B) + beta·C, float32, row-major, two backends.
//
// Measured with bench/matmul/run.sh (release; 2-core AMD EPYC, OPENBLAS_CORETYPE=Haswell,
// OpenBLAS 0.3.21 pthread; load average ~3 from other builds, so ±15%). GFLOP/s:
//
//   shape                          BLAS 1 thr  BLAS 2 thr  Swift  BLAS1/Swift
//   fwd L0    256×256 · 256×512         127.4       209.2   41.4         3.07
//   fwd L1-3  256×512 · 512×512         127.4       215.9   39.5         3.23
//   fwd L4    256×512 · 512×10           75.1        35.7   15.5         4.86
//   dW L0     (256×256)ᵀ · 256×512      126.9       201.0   41.0         3.09
//   dW L1-3   (256×512)ᵀ · 256×512      128.3       206.7   40.4         3.18
//   dX L1-3   256×512 · (512×512)ᵀ      127.7       206.7   40.9         3.12
//   micro     64×512 · 512×512          117.5       189.3   40.0         2.94
//   1024²                               129.0       233.9   41.5         3.11
//
// OpenBLAS wins every shape by about 3× on one thread, so `.blas` is the default backend. Its
// second thread adds 60–80% on the large shapes but halves the narrow logits product and
// spins on a busy host: with several workers per host, set `BLAS.threads = 1`. The Swift
// kernel (packed 6×8 SIMD8 micro-kernel, single-threaded; plain x86-64 SSE code, since the
// package may not pass `-target-cpu`, so no AVX/FMA) stays selectable through
// `Kernels.backend` and cross-checks BLAS in the tests.

import COpenBLAS
import Synchronization

/// Which implementation `Kernels.sgemm` (and so every layer) uses.
public enum MatmulBackend: String, Sendable, Hashable, CaseIterable, Codable {
    /// OpenBLAS `cblas_sgemm` (the default: several times faster, see Matmul.swift).
    case blas
    /// The pure-Swift packed SIMD8 kernel (`SwiftGEMM`).
    case swift
}

private let backendSelection = Atomic<UInt8>(0)

/// Entry point for matrix multiplies; layers call `Kernels.sgemm` and so follow `backend`.
public enum Kernels {
    /// The process-wide backend used when none is passed explicitly. Defaults to `.blas`.
    public static var backend: MatmulBackend {
        get { backendSelection.load(ordering: .relaxed) == 0 ? .blas : .swift }
        set { backendSelection.store(newValue == .blas ? 0 : 1, ordering: .relaxed) }
    }

    /// C = alpha·op(A)·op(B) + beta·C in row-major storage, where op(X) is X or Xᵀ.
    ///
    /// op(A) is m×k, op(B) is k×n, C is m×n; `lda`, `ldb`, `ldc` are the row strides of the
    /// matrices as stored (A is m×k, or k×m when `transA`). When `beta` is 0, C is overwritten
    /// and its previous contents (even NaN) are ignored; when k is 0, C becomes beta·C.
    public static func sgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafeBufferPointer<Float>, lda: Int,
        b: UnsafeBufferPointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutableBufferPointer<Float>, ldc: Int,
        backend: MatmulBackend = Kernels.backend
    ) {
        switch backend {
        case .blas:
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                       b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        case .swift:
            SwiftGEMM.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                            b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        }
    }

    /// Measures the throughput of `backend` on an m×k · k×n product (GFLOP/s, best of
    /// `repetitions` after one warm-up), e.g. for `Capacity.gflops`.
    public static func measureGFLOPS(m: Int = 512, n: Int = 512, k: Int = 512,
                                     backend: MatmulBackend = Kernels.backend, repetitions: Int = 5) -> Double {
        let a = Matrix(rows: m, cols: k, repeating: 0.5)
        let b = Matrix(rows: k, cols: n, repeating: 0.25)
        var c = Matrix(rows: m, cols: n)
        let clock = ContinuousClock()
        var best = Duration.seconds(1_000_000)
        for round in 0...max(1, repetitions) {
            let elapsed = clock.measure { Matrix.gemm(a, b, into: &c, backend: backend) }
            if round > 0 { best = min(best, elapsed) }
        }
        let seconds = Double(best.components.seconds) + Double(best.components.attoseconds) * 1e-18
        return 2.0 * Double(m) * Double(n) * Double(k) / max(seconds, 1e-12) / 1e9
    }
}

/// Checks the shape arguments shared by both backends.
@inline(__always)
private func checkGEMMArguments(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
    aCount: Int, lda: Int, bCount: Int, ldb: Int, cCount: Int, ldc: Int
) {
    precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative dimension m=\(m) n=\(n) k=\(k)")
    func required(_ rows: Int, _ cols: Int, _ ld: Int) -> Int {
        rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols
    }
    let (aRows, aCols) = transA ? (k, m) : (m, k)
    let (bRows, bCols) = transB ? (n, k) : (k, n)
    precondition(aCols == 0 || lda >= aCols, "sgemm: lda \(lda) < \(aCols)")
    precondition(bCols == 0 || ldb >= bCols, "sgemm: ldb \(ldb) < \(bCols)")
    precondition(n == 0 || ldc >= n, "sgemm: ldc \(ldc) < \(n)")
    precondition(aCount >= required(aRows, aCols, lda), "sgemm: A holds \(aCount) floats, needs \(required(aRows, aCols, lda))")
    precondition(bCount >= required(bRows, bCols, ldb), "sgemm: B holds \(bCount) floats, needs \(required(bRows, bCols, ldb))")
    precondition(cCount >= required(m, n, ldc), "sgemm: C holds \(cCount) floats, needs \(required(m, n, ldc))")
}

/// C = beta·C over an m×n block (beta 0 writes zeros), for the k = 0 and alpha = 0 cases.
/// What both backends do first: check the arguments, and finish the trivial cases (an empty C,
/// or nothing to add to beta·C). Returns the base addresses when a product remains to compute.
private func prepareGEMM(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
    alpha: Float, a: UnsafeBufferPointer<Float>, lda: Int,
    b: UnsafeBufferPointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutableBufferPointer<Float>, ldc: Int
) -> (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>)? {
    checkGEMMArguments(transA: transA, transB: transB, m: m, n: n, k: k, aCount: a.count, lda: lda,
                       bCount: b.count, ldb: ldb, cCount: c.count, ldc: ldc)
    guard m > 0, n > 0 else { return nil }
    guard k > 0, alpha != 0, let aBase = a.baseAddress, let bBase = b.baseAddress, let cBase = c.baseAddress else {
        scale(c, m: m, n: n, ldc: ldc, beta: beta)
        return nil
    }
    return (aBase, bBase, cBase)
}

private func scale(_ c: UnsafeMutableBufferPointer<Float>, m: Int, n: Int, ldc: Int, beta: Float) {
    guard let base = c.baseAddress, beta != 1 else { return }
    for i in 0..<m {
        let row = base + i * ldc
        if beta == 0 {
            row.update(repeating: 0, count: n)
        } else {
            for j in 0..<n { row[j] *= beta }
        }
    }
}

/// OpenBLAS through `cblas_sgemm`.
public enum BLAS {
    /// The number of threads OpenBLAS uses for one call (OPENBLAS_NUM_THREADS or the core
    /// count unless set). Several worker processes on one host usually want 1. Set it at
    /// startup: OpenBLAS does not order a change against calls running on other threads.
    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }

    /// `cblas_sgemm(CblasRowMajor, …)` with the semantics of `Kernels.sgemm`.
    public static func sgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafeBufferPointer<Float>, lda: Int,
        b: UnsafeBufferPointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutableBufferPointer<Float>, ldc: Int
    ) {
        guard let (aBase, bBase, cBase) = prepareGEMM(
            transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc
        ) else { return }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, aBase, Int32(max(1, lda)), bBase, Int32(max(1, ldb)),
                    beta, cBase, Int32(max(1, ldc)))
    }
}

/// A pure-Swift single-threaded SGEMM: op(A) is packed into 6-row panels and op(B) into 8-column
/// `SIMD8<Float>` panels per 256-deep slice of k (GotoBLAS loop order), and a 6×8 register-tile
/// micro-kernel accumulates each tile. Same semantics as `Kernels.sgemm`.
public enum SwiftGEMM {
    static let mr = 6
    static let nr = 8
    static let kc = 256
    static let mc = 96

    /// C = alpha·op(A)·op(B) + beta·C with the semantics of `Kernels.sgemm`.
    public static func sgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafeBufferPointer<Float>, lda: Int,
        b: UnsafeBufferPointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutableBufferPointer<Float>, ldc: Int
    ) {
        guard let (aBase, bBase, cBase) = prepareGEMM(
            transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc
        ) else { return }
        let nPanels = (n + nr - 1) / nr
        let kBlock = min(k, kc)
        let packedB = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: nPanels * kBlock)
        defer { packedB.deallocate() }
        let mBlock = min(mc, (m + mr - 1) / mr * mr)
        let packedA = UnsafeMutablePointer<Float>.allocate(capacity: mBlock * kBlock)
        defer { packedA.deallocate() }

        var p0 = 0
        while p0 < k {
            let kcur = min(kc, k - p0)
            packB(transB: transB, b: bBase, ldb: ldb, p0: p0, kcur: kcur, n: n, into: packedB)
            // First slice applies beta; later slices accumulate.
            let sliceBeta: Float = p0 == 0 ? beta : 1
            var i0 = 0
            while i0 < m {
                let mcur = min(mc, m - i0)
                packA(transA: transA, a: aBase, lda: lda, i0: i0, mcur: mcur, p0: p0, kcur: kcur, into: packedA)
                for panel in 0..<nPanels {
                    let j = panel * nr
                    let bPanel = UnsafePointer(packedB + panel * kcur)
                    var r = 0
                    while r < mcur {
                        let aPanel = UnsafePointer(packedA + r * kcur)
                        let tile = microKernel(kc: kcur, a: aPanel, b: bPanel)
                        store(tile, rows: min(mr, mcur - r), cols: min(nr, n - j),
                              c: cBase + (i0 + r) * ldc + j, ldc: ldc, alpha: alpha, beta: sliceBeta)
                        r += mr
                    }
                }
                i0 += mcur
            }
            p0 += kcur
        }
    }

    /// Packs op(B)[p0..<p0+kcur, 0..<n] as panels of 8 columns (zero-padded), k-major per panel.
    @inline(__always)
    static func packB(transB: Bool, b: UnsafePointer<Float>, ldb: Int, p0: Int, kcur: Int, n: Int,
                      into out: UnsafeMutablePointer<SIMD8<Float>>) {
        let nPanels = (n + nr - 1) / nr
        for panel in 0..<nPanels {
            let j0 = panel * nr
            let width = min(nr, n - j0)
            let dst = out + panel * kcur
            if !transB {
                if width == nr {
                    for p in 0..<kcur {
                        dst[p] = UnsafeRawPointer(b + (p0 + p) * ldb + j0).loadUnaligned(as: SIMD8<Float>.self)
                    }
                } else {
                    for p in 0..<kcur {
                        var v = SIMD8<Float>()
                        let src = b + (p0 + p) * ldb + j0
                        for q in 0..<width { v[q] = src[q] }
                        dst[p] = v
                    }
                }
            } else {
                // op(B)[p][j] = B[j][p]
                for p in 0..<kcur { dst[p] = SIMD8<Float>() }
                for q in 0..<width {
                    let src = b + (j0 + q) * ldb + p0
                    for p in 0..<kcur { dst[p][q] = src[p] }
                }
            }
        }
    }

    /// Packs op(A)[i0..<i0+mcur, p0..<p0+kcur] as panels of 6 rows (zero-padded), k-major.
    @inline(__always)
    static func packA(transA: Bool, a: UnsafePointer<Float>, lda: Int, i0: Int, mcur: Int, p0: Int, kcur: Int,
                      into out: UnsafeMutablePointer<Float>) {
        var r0 = 0
        while r0 < mcur {
            let height = min(mr, mcur - r0)
            let dst = out + r0 * kcur
            if height < mr { dst.update(repeating: 0, count: mr * kcur) }
            for r in 0..<height {
                let i = i0 + r0 + r
                if !transA {
                    let src = a + i * lda + p0
                    for p in 0..<kcur { dst[p * mr + r] = src[p] }
                } else {
                    // op(A)[i][p] = A[p][i]
                    let src = a + p0 * lda + i
                    for p in 0..<kcur { dst[p * mr + r] = src[p * lda] }
                }
            }
            r0 += mr
        }
    }

    typealias Tile = (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>)

    /// The 6×8 register tile: sum over p of aPanel[p][r] · bPanel[p].
    @inline(__always)
    static func microKernel(kc: Int, a: UnsafePointer<Float>, b: UnsafePointer<SIMD8<Float>>) -> Tile {
        var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), c2 = SIMD8<Float>()
        var c3 = SIMD8<Float>(), c4 = SIMD8<Float>(), c5 = SIMD8<Float>()
        var ap = a
        var bp = b
        for _ in 0..<kc {
            let bv = bp.pointee
            c0 += bv * ap[0]
            c1 += bv * ap[1]
            c2 += bv * ap[2]
            c3 += bv * ap[3]
            c4 += bv * ap[4]
            c5 += bv * ap[5]
            ap += 6
            bp += 1
        }
        return (c0, c1, c2, c3, c4, c5)
    }

    /// C[tile] = alpha·tile + beta·C[tile] (beta 0: C is not read), for the valid rows × cols.
    @inline(__always)
    static func store(_ tile: Tile, rows: Int, cols: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
                      alpha: Float, beta: Float) {
        @inline(__always)
        func row(_ r: Int) -> SIMD8<Float> {
            switch r {
            case 0: tile.0
            case 1: tile.1
            case 2: tile.2
            case 3: tile.3
            case 4: tile.4
            default: tile.5
            }
        }
        for r in 0..<rows {
            let dst = c + r * ldc
            var v = row(r) * alpha
            if cols == nr {
                let raw = UnsafeMutableRawPointer(dst)
                if beta != 0 {
                    v += raw.loadUnaligned(as: SIMD8<Float>.self) * beta
                }
                raw.storeBytes(of: v, as: SIMD8<Float>.self)
            } else {
                for q in 0..<cols {
                    dst[q] = beta == 0 ? v[q] : v[q] + beta * dst[q]
                }
            }
        }
    }
}
