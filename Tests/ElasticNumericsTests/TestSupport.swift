#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import ElasticCore
import ElasticNumerics

/// Seeded test randomness; every test that uses it prints its seed.
struct TestRandom {
    var rng: SplitMix64

    init(seed: UInt64, _ test: String = #function) {
        print("[\(test)] seed = \(seed)")
        rng = SplitMix64(seed: seed)
    }

    /// Uniform in [lower, upper).
    mutating func uniform(_ lower: Float = -1, _ upper: Float = 1) -> Float {
        lower + (upper - lower) * Float(rng.uniform())
    }

    mutating func floats(_ count: Int, _ lower: Float = -1, _ upper: Float = 1) -> [Float] {
        (0..<count).map { _ in uniform(lower, upper) }
    }

    mutating func matrix(_ rows: Int, _ cols: Int, _ lower: Float = -1, _ upper: Float = 1) -> Matrix {
        Matrix(rows: rows, cols: cols, values: floats(rows * cols, lower, upper))
    }

    mutating func labels(_ count: Int, classes: Int) -> [Int32] {
        (0..<count).map { _ in Int32(rng.next() % UInt64(classes)) }
    }

    mutating func layer(_ fanIn: Int, _ fanOut: Int, _ activation: Activation) -> Layer {
        Layer(spec: LayerSpec(fanIn: fanIn, fanOut: fanOut, activation: activation),
              weight: floats(fanIn * fanOut), bias: floats(fanOut, -0.5, 0.5))
    }
}

/// Σ a·b in float64 (a weighted sum used as a scalar test loss).
func dot(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count)
    var sum = 0.0
    for (x, y) in zip(a, b) { sum += Double(x) * Double(y) }
    return sum
}

/// Largest |a − b| over two arrays of equal length.
func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var worst: Float = 0
    for (x, y) in zip(a, b) { worst = max(worst, abs(x - y)) }
    return worst
}

/// Largest |x|.
func maxAbs(_ a: [Float]) -> Float { a.reduce(0) { max($0, abs($1)) } }

// MARK: Processes and files (POSIX only; the library itself does no file I/O)

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A fresh directory under $TMPDIR (or /tmp).
func makeTemporaryDirectory() throws -> String {
    let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    var template = Array("\(base)/elastic-numerics-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw TestFailure("mkdtemp failed in \(base): errno \(errno)") }
    return String(cString: made)
}

/// Removes the files directly inside `directory`, then the directory.
func removeDirectory(_ directory: String) {
    if let dir = opendir(directory) {
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { unlink("\(directory)/\(name)") }
        }
        closedir(dir)
    }
    rmdir(directory)
}

func readFile(_ path: String) throws -> [UInt8] {
    guard let file = fopen(path, "rb") else { throw TestFailure("cannot open \(path): errno \(errno)") }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return bytes
}

/// Little-endian float32 / int32 files (this host is little-endian).
func decodeFloats(_ bytes: [UInt8]) -> [Float] {
    decode(bytes, as: Float.self)
}

func decodeInt32s(_ bytes: [UInt8]) -> [Int32] {
    decode(bytes, as: Int32.self)
}

private func decode<T: BitwiseCopyable>(_ bytes: [UInt8], as: T.Type) -> [T] {
    precondition(UInt16(1).littleEndian == 1, "the tests read little-endian files on a little-endian host")
    let count = bytes.count / MemoryLayout<T>.size
    return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
        bytes.withUnsafeBytes { raw in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[0..<count * MemoryLayout<T>.size]))
        }
        initialized = count
    }
}

/// Little-endian bytes of floats.
func encodeFloats(_ values: [Float]) -> [UInt8] {
    precondition(UInt16(1).littleEndian == 1, "the tests write little-endian files on a little-endian host")
    return values.withUnsafeBytes { Array($0) }
}

/// Runs `arguments` (arguments[0] looked up on PATH), stdout and stderr to files; returns the
/// exit status (128+signal when killed).
func runProcess(_ arguments: [String], stdout: String, stderr: String) throws -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid = pid_t()
    let rc = posix_spawnp(&pid, arguments[0], &actions, nil, argv, environ)
    guard rc == 0 else {
        throw TestFailure("could not start \(arguments[0]) (\(String(cString: strerror(rc)))); is it installed and on PATH?")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        guard errno == EINTR else { throw TestFailure("waitpid failed: errno \(errno)") }
    }
    return status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
}
