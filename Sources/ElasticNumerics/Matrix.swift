/// A dense float32 matrix in row-major order: element (r, c) is `values[r * cols + c]`.
/// A value type; copies share storage until written (copy-on-write of `[Float]`).
public struct Matrix: Sendable, Hashable {
    /// Number of rows (samples, for activations).
    public private(set) var rows: Int
    /// Number of columns (features).
    public private(set) var cols: Int
    /// The elements, row by row. Must stay `rows * cols` long (operations check it).
    public var values: [Float]

    /// A rows × cols matrix filled with `value` (zeros by default).
    public init(rows: Int, cols: Int, repeating value: Float = 0) {
        precondition(rows >= 0 && cols >= 0, "negative matrix shape \(rows)×\(cols)")
        self.rows = rows
        self.cols = cols
        self.values = [Float](repeating: value, count: rows * cols)
    }

    /// A rows × cols matrix over `values` (row-major, exactly rows·cols long).
    public init(rows: Int, cols: Int, values: [Float]) {
        precondition(rows >= 0 && cols >= 0, "negative matrix shape \(rows)×\(cols)")
        precondition(values.count == rows * cols, "a \(rows)×\(cols) matrix needs \(rows * cols) values, got \(values.count)")
        self.rows = rows
        self.cols = cols
        self.values = values
    }

    /// Like `init(rows:cols:values:)`, but throws `.shapeMismatch` instead of trapping: for
    /// matrices that arrive from peers or files.
    public static func validated(rows: Int, cols: Int, values: [Float]) throws(NumericsError) -> Matrix {
        let (count, overflow) = rows.multipliedReportingOverflow(by: cols)
        guard rows >= 0, cols >= 0, !overflow, values.count == count else {
            throw NumericsError(.shapeMismatch, "a \(rows)×\(cols) matrix cannot hold \(values.count) values")
        }
        return Matrix(rows: rows, cols: cols, values: values)
    }

    /// Element (row, col).
    public subscript(row: Int, col: Int) -> Float {
        get {
            precondition(row >= 0 && row < rows && col >= 0 && col < cols, "index (\(row), \(col)) outside \(rows)×\(cols)")
            return values[row * cols + col]
        }
        set {
            precondition(row >= 0 && row < rows && col >= 0 && col < cols, "index (\(row), \(col)) outside \(rows)×\(cols)")
            values[row * cols + col] = newValue
        }
    }

    /// (rows, cols).
    public var shape: (rows: Int, cols: Int) { (rows, cols) }

    /// The rows in `range` (e.g. one micro-batch of a batch).
    public func rows(_ range: Range<Int>) -> Matrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) outside 0..<\(rows)")
        return Matrix(rows: range.count, cols: cols, values: Array(values[range.lowerBound * cols..<range.upperBound * cols]))
    }

    /// A matrix whose row i is row `indices[i]` of this one (e.g. a batch in data order).
    public func gatheringRows<C: Collection>(_ indices: C) -> Matrix where C.Element: BinaryInteger {
        var out = [Float]()
        out.reserveCapacity(indices.count * cols)
        values.withUnsafeBufferPointer { src in
            for index in indices {
                let r = Int(index)
                precondition(r >= 0 && r < rows, "row \(r) outside 0..<\(rows)")
                out.append(contentsOf: src[r * cols..<(r + 1) * cols])
            }
        }
        return Matrix(rows: indices.count, cols: cols, values: out)
    }

    /// The matrices stacked vertically (all with the same column count), e.g. micro-batches.
    public init(stacking parts: [Matrix]) {
        let cols = parts.first?.cols ?? 0
        precondition(parts.allSatisfy { $0.cols == cols }, "stacked matrices must have equal column counts")
        var values = [Float]()
        values.reserveCapacity(parts.reduce(0) { $0 + $1.values.count })
        for part in parts { values.append(contentsOf: part.values) }
        self.init(rows: parts.reduce(0) { $0 + $1.rows }, cols: cols, values: values)
    }

    /// The transpose (cols × rows).
    public func transposed() -> Matrix {
        var out = Matrix(rows: cols, cols: rows)
        let (r, c) = (rows, cols)
        values.withUnsafeBufferPointer { src in
            out.values.withUnsafeMutableBufferPointer { dst in
                for i in 0..<r {
                    for j in 0..<c { dst[j * r + i] = src[i * c + j] }
                }
            }
        }
        return out
    }

    /// The largest |self − other| over all elements (shapes must match).
    public func maxAbsDifference(_ other: Matrix) -> Float {
        precondition(rows == other.rows && cols == other.cols, "shape \(rows)×\(cols) vs \(other.rows)×\(other.cols)")
        var worst: Float = 0
        for (x, y) in zip(values, other.values) { worst = max(worst, abs(x - y)) }
        return worst
    }

    /// Same shape and elementwise float equality (so NaN ≠ NaN, 0 = −0).
    public static func == (lhs: Matrix, rhs: Matrix) -> Bool {
        lhs.rows == rhs.rows && lhs.cols == rhs.cols && lhs.values == rhs.values
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(rows)
        hasher.combine(cols)
        hasher.combine(values)
    }
}

extension Matrix {
    /// C = alpha·op(A)·op(B) + beta·C on whole matrices (op = transpose when asked). C must
    /// already have the result's shape; with beta 0 its contents are ignored.
    public static func gemm(
        _ a: Matrix, transposeA: Bool = false, _ b: Matrix, transposeB: Bool = false,
        alpha: Float = 1, beta: Float = 0, into c: inout Matrix, backend: MatmulBackend = Kernels.backend
    ) {
        let (m, k) = transposeA ? (a.cols, a.rows) : (a.rows, a.cols)
        let (kb, n) = transposeB ? (b.cols, b.rows) : (b.rows, b.cols)
        precondition(k == kb, "matmul: op(A) is \(m)×\(k) but op(B) is \(kb)×\(n)")
        precondition(c.rows == m && c.cols == n, "matmul: C is \(c.rows)×\(c.cols), expected \(m)×\(n)")
        precondition(a.values.count == a.rows * a.cols && b.values.count == b.rows * b.cols
                     && c.values.count == c.rows * c.cols, "matmul: a matrix's values do not match its shape")
        let (lda, ldb, ldc) = (a.cols, b.cols, c.cols)
        a.values.withUnsafeBufferPointer { ap in
            b.values.withUnsafeBufferPointer { bp in
                c.values.withUnsafeMutableBufferPointer { cp in
                    Kernels.sgemm(transA: transposeA, transB: transposeB, m: m, n: n, k: k, alpha: alpha,
                                  a: ap, lda: lda, b: bp, ldb: ldb, beta: beta, c: cp, ldc: ldc, backend: backend)
                }
            }
        }
    }

    /// op(self)·op(other) as a new matrix.
    public func matmul(_ other: Matrix, transposeSelf: Bool = false, transposeOther: Bool = false,
                       backend: MatmulBackend = Kernels.backend) -> Matrix {
        var c = Matrix(rows: transposeSelf ? cols : rows, cols: transposeOther ? other.rows : other.cols)
        Matrix.gemm(self, transposeA: transposeSelf, other, transposeB: transposeOther, into: &c, backend: backend)
        return c
    }
}
