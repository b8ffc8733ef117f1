// Matmul benchmark: GFLOP/s of OpenBLAS (1 and 2 threads) and the pure-Swift kernel on the W1
// shapes. Run with bench/matmul/run.sh (release build); see README.md.
import COpenBLAS
import ElasticCore
import ElasticNumerics

struct Shape {
    let label: String
    let m: Int, n: Int, k: Int
    let transA: Bool, transB: Bool
}

let shapes: [Shape] = [
    Shape(label: "fwd L0   256x256 . 256x512", m: 256, n: 512, k: 256, transA: false, transB: false),
    Shape(label: "fwd L1-3 256x512 . 512x512", m: 256, n: 512, k: 512, transA: false, transB: false),
    Shape(label: "fwd L4   256x512 . 512x10", m: 256, n: 10, k: 512, transA: false, transB: false),
    Shape(label: "dW L0    (256x256)T . 256x512", m: 256, n: 512, k: 256, transA: true, transB: false),
    Shape(label: "dW L1-3  (256x512)T . 256x512", m: 512, n: 512, k: 256, transA: true, transB: false),
    Shape(label: "dX L1-3  256x512 . (512x512)T", m: 256, n: 512, k: 512, transA: false, transB: true),
    Shape(label: "micro    64x512 . 512x512", m: 64, n: 512, k: 512, transA: false, transB: false),
    Shape(label: "ref      1024x1024 . 1024x1024", m: 1024, n: 1024, k: 1024, transA: false, transB: false),
]

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}

func random(_ count: Int, rng: inout SplitMix64) -> [Float] {
    (0..<count).map { _ in Float(2 * rng.uniform() - 1) }
}
var rng = SplitMix64(seed: 0x5EED)

/// Best-of timing: repeats until 0.25 s have passed (at least 3 runs) and keeps the fastest.
func gflops(_ s: Shape, backend: MatmulBackend, a: [Float], b: [Float], c: inout [Float]) -> Double {
    let clock = ContinuousClock()
    let lda = s.transA ? s.m : s.k
    let ldb = s.transB ? s.k : s.n
    func once() {
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    Kernels.sgemm(transA: s.transA, transB: s.transB, m: s.m, n: s.n, k: s.k, alpha: 1,
                                  a: ap, lda: lda, b: bp, ldb: ldb, beta: 0, c: cp, ldc: s.n, backend: backend)
                }
            }
        }
    }
    once()
    var best = Double.infinity
    var total = 0.0
    var runs = 0
    while runs < 3 || total < 0.25 {
        let t = seconds(clock.measure { once() })
        best = min(best, t)
        total += t
        runs += 1
    }
    return 2.0 * Double(s.m) * Double(s.n) * Double(s.k) / best / 1e9
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}
func lpad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
}
func fmt(_ x: Double, _ decimals: Int = 1) -> String {
    let scale = decimals == 1 ? 10.0 : 100.0
    let v = (x * scale).rounded() / scale
    var text = String(v)
    if let dot = text.firstIndex(of: ".") {
        let fraction = text[text.index(after: dot)...].count
        if fraction < decimals { text += String(repeating: "0", count: decimals - fraction) }
    }
    return text
}

print("OpenBLAS threads available: \(BLAS.threads)")
print(pad("shape (M×K · K×N)", 34) + lpad("BLAS 1t", 9) + lpad("BLAS 2t", 9) + lpad("Swift", 9)
      + lpad("BLAS1/Sw", 10) + lpad("BLAS2/Sw", 10) + "  max|BLAS−Swift|")
for s in shapes {
    let a = random(s.m * s.k, rng: &rng)
    let b = random(s.k * s.n, rng: &rng)
    var cBLAS = [Float](repeating: 0, count: s.m * s.n)
    var cSwift = cBLAS
    BLAS.threads = 1
    let blas1 = gflops(s, backend: .blas, a: a, b: b, c: &cBLAS)
    BLAS.threads = 2
    let blas2 = gflops(s, backend: .blas, a: a, b: b, c: &cBLAS)
    let swift = gflops(s, backend: .swift, a: a, b: b, c: &cSwift)
    var diff: Float = 0
    for (x, y) in zip(cBLAS, cSwift) { diff = max(diff, abs(x - y)) }
    print(pad(s.label, 34) + lpad(fmt(blas1), 9) + lpad(fmt(blas2), 9) + lpad(fmt(swift), 9)
          + lpad(fmt(blas1 / swift, 2), 10) + lpad(fmt(blas2 / swift, 2), 10) + "  " + String(diff))
}

// State checksum throughput (XXH64 per tensor, see LayerState.checksum), a W2-sized layer.
do {
    var layer = Layer(spec: LayerSpec(fanIn: 2048, fanOut: 2048, activation: .relu),
                  weight: [Float](repeating: 0.5, count: 2048 * 2048), bias: [Float](repeating: 0, count: 2048))
    layer.applyOptimizer(.w1, learningRate: 0.05)
    let clock = ContinuousClock()
    var checksum: UInt64 = 0
    let elapsed = clock.measure { checksum = layer.checksum() }
    let bytes = Double(2 * layer.spec.parameterCount * 4)
    print("checksum of a 2048×2048 layer + SGD state (\(Int(bytes) >> 20) MiB): \(fmt(seconds(elapsed) * 1000)) ms, \(fmt(bytes / seconds(elapsed) / 1e9, 2)) GB/s [\(checksum)]")
}
