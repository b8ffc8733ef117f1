import Testing
import ElasticNumerics

@Suite("Matrix multiply: BLAS and the Swift kernel")
struct MatmulTests {
    /// (m, n, k): empty, single, odd, and sizes that cross the Swift kernel's 6×8 tiles, its
    /// 96-row blocks and its 256-deep k slices.
    static let sizes: [(Int, Int, Int)] = [
        (0, 0, 0), (0, 3, 2), (3, 0, 2), (3, 2, 0), (1, 1, 1), (1, 7, 1), (7, 1, 13), (5, 9, 3),
        (6, 8, 4), (13, 17, 19), (7, 9, 300), (100, 20, 37), (2, 33, 1),
    ]

    /// C = alpha·op(A)·op(B) + beta·C in float64, over padded storage.
    static func reference(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: [Float], lda: Int,
                          b: [Float], ldb: Int, beta: Float, c: [Float], ldc: Int) -> [Float] {
        var out = c
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k {
                    let x = transA ? a[p * lda + i] : a[i * lda + p]
                    let y = transB ? b[j * ldb + p] : b[p * ldb + j]
                    sum += Double(x) * Double(y)
                }
                let previous = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
                out[i * ldc + j] = Float(Double(alpha) * sum + previous)
            }
        }
        return out
    }

    @Test(arguments: [false, true], [false, true])
    func backendsAgreeWithFloat64Reference(transA: Bool, transB: Bool) {
        var random = TestRandom(seed: 0xA11CE ^ (transA ? 2 : 0) ^ (transB ? 1 : 0))
        for (m, n, k) in Self.sizes {
            for (alpha, beta) in [(Float(1), Float(0)), (-0.5, 1), (2, 0.5)] {
                // Stored shapes, each padded by 3 columns that must stay untouched in C.
                let (aRows, aCols) = transA ? (k, m) : (m, k)
                let (bRows, bCols) = transB ? (n, k) : (k, n)
                let (lda, ldb, ldc) = (aCols + 3, bCols + 3, n + 3)
                let a = random.floats(aRows * lda)
                let b = random.floats(bRows * ldb)
                var c = random.floats(m * ldc)
                if beta == 0 {  // beta 0 must ignore C entirely, NaN included
                    for i in 0..<m { for j in 0..<n { c[i * ldc + j] = .nan } }
                }
                let expected = Self.reference(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                                              a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
                let tolerance = 4e-6 * Float(max(k, 1)) + 1e-6
                for backend in MatmulBackend.allCases {
                    var out = c
                    a.withUnsafeBufferPointer { ap in
                        b.withUnsafeBufferPointer { bp in
                            out.withUnsafeMutableBufferPointer { cp in
                                Kernels.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: ap, lda: lda,
                                              b: bp, ldb: ldb, beta: beta, c: cp, ldc: ldc, backend: backend)
                            }
                        }
                    }
                    let difference = expected.isEmpty ? 0 : maxAbsDiff(out, expected)
                    #expect(difference <= tolerance,
                            "\(backend) m=\(m) n=\(n) k=\(k) transA=\(transA) transB=\(transB) alpha=\(alpha) beta=\(beta): |Δ| \(difference)")
                    // Padding columns of C untouched (bit for bit).
                    for i in 0..<m {
                        for j in n..<ldc where out[i * ldc + j].bitPattern != c[i * ldc + j].bitPattern {
                            Issue.record("\(backend) wrote padding C[\(i), \(j)] for m=\(m) n=\(n) k=\(k)")
                        }
                    }
                }
            }
        }
    }

    @Test func matrixMatmulMatchesExplicitTranspose() {
        var random = TestRandom(seed: 31)
        let a = random.matrix(9, 4)
        let b = random.matrix(9, 5)
        for backend in MatmulBackend.allCases {
            let implicit = a.matmul(b, transposeSelf: true, backend: backend)
            let explicit = a.transposed().matmul(b, backend: backend)
            #expect(implicit.rows == 4 && implicit.cols == 5)
            #expect(implicit.maxAbsDifference(explicit) <= 1e-6)
            let nt = b.transposed().matmul(a.transposed(), transposeOther: true, backend: backend)  // 5×9 · 9×4
            #expect(nt.maxAbsDifference(implicit.transposed()) <= 1e-6)
        }
    }

    @Test func selectedBackendIsUsedAndDefaultsToBLAS() {
        #expect(Kernels.backend == .blas)
        #expect(BLAS.threads >= 1)
        for backend in MatmulBackend.allCases {
            #expect(Kernels.measureGFLOPS(m: 8, n: 8, k: 8, backend: backend, repetitions: 1) > 0)
        }
    }

    @Test func matrixRowHelpers() throws {
        let m = Matrix(rows: 3, cols: 2, values: [1, 2, 3, 4, 5, 6])
        #expect(m.rows(1..<3) == Matrix(rows: 2, cols: 2, values: [3, 4, 5, 6]))
        #expect(m.gatheringRows([2, 0] as [Int32]) == Matrix(rows: 2, cols: 2, values: [5, 6, 1, 2]))
        #expect(Matrix(stacking: [m.rows(0..<1), m.rows(1..<3)]) == m)
        #expect(m.transposed() == Matrix(rows: 2, cols: 3, values: [1, 3, 5, 2, 4, 6]))
        #expect(m[2, 1] == 6)
        #expect(m.rows(0..<0).rows == 0)
        #expect(try Matrix.validated(rows: 3, cols: 2, values: m.values) == m)
        #expect(throws: NumericsError.self) { try Matrix.validated(rows: 2, cols: 2, values: m.values) }
        #expect(throws: NumericsError.self) { try Matrix.validated(rows: -1, cols: -6, values: m.values) }
        #expect(throws: NumericsError.self) { try Matrix.validated(rows: Int.max, cols: 3, values: m.values) }
    }
}
