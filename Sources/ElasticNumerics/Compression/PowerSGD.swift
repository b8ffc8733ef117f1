import ElasticCore

/// PowerSGD (Vogels, Karimireddy & Jaggi, 2019) for one matrix gradient of one replica: rank-r
/// approximation by one power iteration per step, with error feedback and warm start.
///
/// A step is a small state machine, so that the network layer can run the two all-reduces:
///
///     switch try c.begin(gradient, step: t) {            // M = gradient + residual
///     case .uncompressed: all-reduce the gradient as is    // warm-up: state untouched
///     case .factor(let p):                                 // P = M·Q, rows × r
///         let q = try c.middle(reducedP: allReduce(p))     // P̂ = orth(ΣP); Q = Mᵀ·P̂, cols × r
///         let g = try c.finish(reducedQ: allReduce(q))     // g = P̂·(ΣQ)ᵀ; residual = M − P̂·Qᵀ
///     }
///
/// "reduced" is the element-wise sum over the replicas (as `RingAllReduce` computes; P's
/// scale does not matter, Q's sum gives the sum of the replicas' M projected on span(P̂)).
///
/// Every replica must pass bit-identical reduced buffers (a ring all-reduce gives them);
/// then `middle`'s orthogonalization and `finish`'s product, both fixed-order Swift loops (not
/// BLAS, whose summation order can depend on threads and CPU), give every replica
/// bit-identical `finish` results. The local products M·Q, Mᵀ·P̂ and the residual's P̂·Qᵀ use
/// `Kernels.sgemm`: they are reduced or stay on the replica.
///
/// Error feedback: each replica keeps residual = M − P̂·Qᵀ with its OWN Q = Mᵀ·P̂ (before the
/// reduction), i.e. what projecting its M on the shared span(P̂) lost. The replicas' shares
/// P̂·Qᵣᵀ add up to g (Σ P̂·Qᵣᵀ = P̂·(ΣQᵣ)ᵀ), so Σ residuals = Σ M − g: nothing is lost or
/// counted twice, whatever the number of replicas. PyTorch's hook keeps M − mean(g) instead:
/// the same sum, but each residual then also accumulates, as a random walk, how its replica's
/// gradients differed from the mean, which grows like √steps, costs float precision, and is
/// lost in one piece when the replica leaves. Here a residual is a projection's remainder,
/// bounded like any error-feedback residual.
///
/// State: `residual` (rows × cols, this replica's own) and `q` (cols × r, the previous step's
/// reduced Q, identical on all replicas; initially seeded Gaussian from `seed`). Only `finish`
/// changes them: a step abandoned before it (`abandon()`, or simply the next `begin`) leaves
/// the state as it was. During the first `warmupSteps` steps of the job (`step` is the job's
/// global 0-based step index, so warm-up survives restarts), `begin` returns `.uncompressed`
/// and changes nothing: the residual stays zero and Q its seeded value.
///
/// A Q column that is zero or not finite (a zero or diverged gradient) would stay so forever
/// under warm start; `begin` replaces such columns with fresh Gaussians seeded by (seed, step),
/// the same on every replica.
public struct PowerSGDCompressor: Sendable, Equatable {
    public let rows: Int
    public let cols: Int
    public let rank: Int
    public let warmupSteps: Int
    /// Seeds the initial Q (and refreshed columns); must be equal on every replica.
    public let seed: UInt64
    /// M − P̂·Qᵀ (own Q) of the last finished step: what this replica has not sent yet;
    /// rows·cols floats, row-major.
    public private(set) var residual: [Float]
    /// The last reduced Q (warm start); cols·rank floats, row-major.
    public private(set) var q: [Float]
    private var phase: Phase

    private enum Phase {
        case idle
        case awaitingP(m: [Float])
        case awaitingQ(m: [Float], p: [Float], localQ: [Float])
    }

    /// What `begin` asks the caller to all-reduce.
    public enum Start: Sendable, Equatable {
        /// A warm-up step: all-reduce the gradient itself (float32); the step ends there.
        case uncompressed
        /// All-reduce P (rows·rank floats, row-major), then call `middle`.
        case factor(p: [Float])

        public static func == (lhs: Start, rhs: Start) -> Bool {
            switch (lhs, rhs) {
            case (.uncompressed, .uncompressed): true
            case (.factor(let a), .factor(let b)): bitwiseEqual(a, b)
            default: false
            }
        }
    }

    public init(rows: Int, cols: Int, rank: Int, warmupSteps: Int = 0, seed: UInt64) {
        precondition(rows >= 1 && cols >= 1 && rank >= 1, "PowerSGD needs positive rows, cols and rank, got \(rows)×\(cols) rank \(rank)")
        precondition(warmupSteps >= 0, "negative warm-up \(warmupSteps)")
        self.rows = rows
        self.cols = cols
        self.rank = rank
        self.warmupSteps = warmupSteps
        self.seed = seed
        self.residual = [Float](repeating: 0, count: rows * cols)
        self.q = Self.initialQ(cols: cols, rank: rank, seed: seed)
        self.phase = .idle
    }

    /// cols·rank standard normals (SplitMix64 `normal()`, rounded to float32), row-major.
    public static func initialQ(cols: Int, rank: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<cols * rank).map { _ in Float(rng.normal()) }
    }

    /// Bitwise equality of the state, including a step in progress.
    public static func == (lhs: PowerSGDCompressor, rhs: PowerSGDCompressor) -> Bool {
        guard lhs.rows == rhs.rows, lhs.cols == rhs.cols, lhs.rank == rhs.rank, lhs.warmupSteps == rhs.warmupSteps,
              lhs.seed == rhs.seed, bitwiseEqual(lhs.residual, rhs.residual), bitwiseEqual(lhs.q, rhs.q) else { return false }
        switch (lhs.phase, rhs.phase) {
        case (.idle, .idle): return true
        case (.awaitingP(let a), .awaitingP(let b)): return bitwiseEqual(a, b)
        case (.awaitingQ(let a, let p, let q), .awaitingQ(let b, let r, let s)):
            return bitwiseEqual(a, b) && bitwiseEqual(p, r) && bitwiseEqual(q, s)
        default: return false
        }
    }

    /// Whether step `step` (global, 0-based) crosses uncompressed.
    public func isWarmup(step: Int) -> Bool { step < warmupSteps }

    /// Whether a step is between `begin` and `finish`.
    public var isInProgress: Bool {
        if case .idle = phase { return false }
        return true
    }

    // MARK: The step

    /// Starts step `step` with this replica's gradient (rows·cols floats, row-major).
    /// Abandons any unfinished step. Throws `.protocolViolation` on a wrong gradient size.
    public mutating func begin(_ gradient: UnsafeBufferPointer<Float>, step: Int) throws(CompressionError) -> Start {
        guard gradient.count == rows * cols else {
            throw CompressionError(.protocolViolation, "PowerSGD of a \(rows)×\(cols) matrix given \(gradient.count) gradients")
        }
        precondition(step >= 0, "negative step \(step)")
        phase = .idle
        if isWarmup(step: step) { return .uncompressed }
        let n = rows * cols
        let m = [Float](unsafeUninitializedCapacity: n) { buffer, initialized in
            residual.withUnsafeBufferPointer { r in
                for i in 0..<n { buffer[i] = r[i] + gradient[i] }
            }
            initialized = n
        }
        let factors = refreshedQ(step: step)
        var p = [Float](repeating: 0, count: rows * rank)
        m.withUnsafeBufferPointer { m in
            factors.withUnsafeBufferPointer { q in
                p.withUnsafeMutableBufferPointer { p in
                    Kernels.sgemm(transA: false, transB: false, m: rows, n: rank, k: cols, alpha: 1, a: m, lda: cols,
                                  b: q, ldb: rank, beta: 0, c: p, ldc: rank)
                }
            }
        }
        phase = .awaitingP(m: m)
        return .factor(p: p)
    }

    /// `begin` over an array.
    public mutating func begin(_ gradient: [Float], step: Int) throws(CompressionError) -> Start {
        let result = gradient.withUnsafeBufferPointer { g in
            Result { () throws(CompressionError) in try begin(g, step: step) }
        }
        return try result.get()
    }

    /// Takes the reduced P (rows·rank), orthonormalizes its columns, and returns this replica's
    /// Q = Mᵀ·P̂ (cols·rank) to all-reduce. Throws `.protocolViolation` when no `begin` is
    /// waiting for P or the size is wrong (the state is then unchanged).
    public mutating func middle(reducedP: [Float]) throws(CompressionError) -> [Float] {
        guard case .awaitingP(let m) = phase else {
            throw CompressionError(.protocolViolation, "PowerSGD middle without a begun step")
        }
        guard reducedP.count == rows * rank else {
            throw CompressionError(.protocolViolation, "reduced P of \(reducedP.count) floats; \(rows)×\(rank) expected")
        }
        var p = reducedP
        Self.orthogonalize(&p, rows: rows, rank: rank)
        var localQ = [Float](repeating: 0, count: cols * rank)
        m.withUnsafeBufferPointer { m in
            p.withUnsafeBufferPointer { p in
                localQ.withUnsafeMutableBufferPointer { q in
                    Kernels.sgemm(transA: true, transB: false, m: cols, n: rank, k: rows, alpha: 1, a: m, lda: cols,
                                  b: p, ldb: rank, beta: 0, c: q, ldc: rank)
                }
            }
        }
        phase = .awaitingQ(m: m, p: p, localQ: localQ)
        return localQ
    }

    /// Takes the reduced Q (cols·rank) and returns the step's gradient g = P̂·Qᵀ (rows·cols,
    /// row-major; bit-identical on every replica); keeps residual = M − P̂·(own Q)ᵀ and the
    /// reduced Q for the next step. Throws `.protocolViolation` out of order or on a wrong
    /// size (state unchanged).
    public mutating func finish(reducedQ: [Float]) throws(CompressionError) -> [Float] {
        guard case .awaitingQ(var m, let p, let localQ) = phase else {
            throw CompressionError(.protocolViolation, "PowerSGD finish without a middle step")
        }
        guard reducedQ.count == cols * rank else {
            throw CompressionError(.protocolViolation, "reduced Q of \(reducedQ.count) floats; \(cols)×\(rank) expected")
        }
        phase = .idle  // drops the phase's reference to m, so the writes below do not copy it
        let (rows, cols, rank) = (self.rows, self.cols, self.rank)
        // Qᵀ (rank × cols), so the inner loops run over contiguous columns.
        var qT = [Float](repeating: 0, count: rank * cols)
        for j in 0..<cols {
            for k in 0..<rank { qT[k * cols + j] = reducedQ[j * rank + k] }
        }
        // g = P̂·Qᵀ in a fixed order: shared, so bit-identical on every replica.
        var approximation = [Float](repeating: 0, count: rows * cols)
        p.withUnsafeBufferPointer { p in
            qT.withUnsafeBufferPointer { qT in
                approximation.withUnsafeMutableBufferPointer { out in
                    for i in 0..<rows {
                        let row = out.baseAddress! + i * cols
                        let coefficient = p[i * rank]
                        for j in 0..<cols { row[j] = coefficient * qT[j] }
                        for k in 1..<rank {
                            let coefficient = p[i * rank + k]
                            let qRow = qT.baseAddress! + k * cols
                            for j in 0..<cols { row[j] += coefficient * qRow[j] }
                        }
                    }
                }
            }
        }
        // residual = M − P̂·(own Q)ᵀ: local, so BLAS.
        m.withUnsafeMutableBufferPointer { m in
            p.withUnsafeBufferPointer { p in
                localQ.withUnsafeBufferPointer { q in
                    Kernels.sgemm(transA: false, transB: true, m: rows, n: cols, k: rank, alpha: -1, a: p, lda: rank,
                                  b: q, ldb: rank, beta: 1, c: m, ldc: cols)
                }
            }
        }
        residual = m
        q = reducedQ
        return approximation
    }

    /// Drops a step in progress; the state stays as before its `begin`.
    public mutating func abandon() {
        phase = .idle
    }

    /// Replaces residual (rows·cols) and Q (cols·rank), e.g. from exported state; abandons a
    /// step in progress. Throws `.stateMismatch` on wrong sizes.
    public mutating func setState(residual: [Float], q: [Float]) throws(CompressionError) {
        guard residual.count == rows * cols else {
            throw CompressionError(.stateMismatch, "PowerSGD residual of \(residual.count) floats for a \(rows)×\(cols) matrix")
        }
        guard q.count == cols * rank else {
            throw CompressionError(.stateMismatch, "PowerSGD Q of \(q.count) floats; \(cols)×\(rank) expected")
        }
        phase = .idle
        self.residual = residual
        self.q = q
    }

    /// Zeroes the residual, keeping Q (a replica that starts fresh owes nothing).
    public mutating func resetResidual() {
        residual = [Float](repeating: 0, count: rows * cols)
    }

    /// Q with every zero or non-finite column replaced by Gaussians seeded by (seed, step, column).
    private func refreshedQ(step: Int) -> [Float] {
        var factors = q
        for column in 0..<rank {
            var squares = 0.0
            for j in 0..<cols { squares += Double(factors[j * rank + column]) * Double(factors[j * rank + column]) }
            guard squares == 0 || !squares.isFinite else { continue }
            var rng = SplitMix64(seed: SplitMix64.mix(seed ^ SplitMix64.mix(UInt64(step))) &+ UInt64(column))
            for j in 0..<cols { factors[j * rank + column] = Float(rng.normal()) }
        }
        return factors
    }

    // MARK: Orthogonalization

    /// A column that keeps less than this fraction of its norm after projecting out the previous
    /// columns depends on them numerically (float32 noise of P = M·Q) and is set to zero.
    public static let dependentColumnTolerance = 1e-4

    /// Orthonormalizes the columns of `p` (rows × rank, row-major) in place by Gram–Schmidt
    /// in float64, each column projected twice ("twice is enough"), in a fixed order: equal
    /// inputs give bit-identical outputs. Zero and numerically dependent columns become zero
    /// (never NaN); a column holding inf or NaN becomes NaN (a diverged gradient stays visible).
    public static func orthogonalize(_ p: inout [Float], rows: Int, rank: Int) {
        precondition(rows >= 0 && rank >= 0 && p.count == rows * rank, "P of \(p.count) floats is not \(rows)×\(rank)")
        guard rows > 0, rank > 0 else { return }
        // Column-major float64 copy.
        var columns = [Double](repeating: 0, count: rows * rank)
        for i in 0..<rows {
            for c in 0..<rank { columns[c * rows + i] = Double(p[i * rank + c]) }
        }
        columns.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            for c in 0..<rank {
                let v = base + c * rows
                var original = 0.0
                for i in 0..<rows { original += v[i] * v[i] }
                guard original.isFinite else {
                    v.update(repeating: .nan, count: rows)
                    continue
                }
                guard original > 0 else { continue }
                for _ in 0..<2 {
                    for previous in 0..<c {
                        let u = base + previous * rows
                        var dot = 0.0
                        for i in 0..<rows { dot += u[i] * v[i] }
                        if dot != 0 {
                            for i in 0..<rows { v[i] -= dot * u[i] }
                        }
                    }
                }
                var remaining = 0.0
                for i in 0..<rows { remaining += v[i] * v[i] }
                if remaining.isFinite, remaining > dependentColumnTolerance * dependentColumnTolerance * original {
                    let scale = 1 / remaining.squareRoot()
                    for i in 0..<rows { v[i] *= scale }
                } else if remaining.isNaN {
                    v.update(repeating: .nan, count: rows)
                } else {
                    v.update(repeating: 0, count: rows)
                }
            }
        }
        for i in 0..<rows {
            for c in 0..<rank { p[i * rank + c] = Float(columns[c * rows + i]) }
        }
    }
}
