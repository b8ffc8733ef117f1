/// The header of a NumPy `.npy` file (format versions 1.0, 2.0 and 3.0): magic `\x93NUMPY`,
/// major and minor version, header length (2 bytes in 1.x, 4 in 2.x and 3.x), then a Python
/// dict literal with `descr`, `fortran_order` and `shape`, padded with spaces and a newline.
/// Parsed without evaluating anything; malformed headers are refused.
public struct NumpyHeader: Sendable, Equatable {
    public static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY
    /// Largest header accepted (numpy itself refuses headers over 10 000 bytes by default).
    public static let maximumHeaderLength = 1 << 20

    public var majorVersion: UInt8
    public var minorVersion: UInt8
    /// The dtype string, e.g. "<f4".
    public var descr: String
    public var fortranOrder: Bool
    public var shape: [Int]
    /// Where the array's bytes start.
    public var dataOffset: Int

    /// The scalar types this importer reads.
    public enum ScalarType: Sendable, Equatable {
        case float32, int32, int64

        public var size: Int { self == .int64 ? 8 : 4 }
    }

    /// The scalar type and byte order of `descr`, or nil for any other dtype.
    public var scalarType: (type: ScalarType, littleEndian: Bool)? {
        guard descr.utf8.count == 3, let order = descr.first, "<>=|".contains(order) else { return nil }
        let littleEndian: Bool
        switch order {
        case "<": littleEndian = true
        case ">": littleEndian = false
        default:
            #if _endian(big)
            littleEndian = false
            #else
            littleEndian = true
            #endif
        }
        switch descr.dropFirst() {
        case "f4": return (.float32, littleEndian)
        case "i4": return (.int32, littleEndian)
        case "i8": return (.int64, littleEndian)
        default: return nil
        }
    }

    /// Number of elements; nil when the product overflows.
    public var elementCount: Int? {
        var product = 1
        for dimension in shape {
            let (next, overflow) = product.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            product = next
        }
        return product
    }

    /// Parses the header at the start of `bytes` (which must hold at least the whole header).
    /// `path` names the file in errors.
    public static func parse(_ bytes: [UInt8], path: String) throws(DatasetError) -> NumpyHeader {
        func invalid(_ what: String) -> DatasetError {
            DatasetError(.npyInvalid, "\(path) is not a valid .npy file: \(what)", path: path)
        }
        guard bytes.count >= 10 else {
            throw DatasetError(.truncated, "\(path) is \(bytes.count) bytes long, too short for a .npy header: the file is truncated", path: path)
        }
        guard Array(bytes[0..<6]) == magic else {
            throw DatasetError(.badMagic, "\(path) is not a NumPy .npy file (it does not start with \\x93NUMPY): save arrays with numpy.save", path: path)
        }
        let major = bytes[6]
        let minor = bytes[7]
        guard (1...3).contains(major), minor == 0 else {
            throw DatasetError(.unsupportedVersion, "\(path) is a .npy file of format version \(major).\(minor); this build reads 1.0, 2.0 and 3.0", path: path)
        }
        let lengthSize = major == 1 ? 2 : 4
        guard bytes.count >= 8 + lengthSize else {
            throw DatasetError(.truncated, "\(path) is truncated inside its .npy header", path: path)
        }
        var length = 0
        for k in 0..<lengthSize { length |= Int(bytes[8 + k]) << (8 * k) }
        guard length <= maximumHeaderLength else {
            throw invalid("its header claims \(length) bytes, more than the \(maximumHeaderLength) allowed")
        }
        let start = 8 + lengthSize
        guard bytes.count >= start + length else {
            throw DatasetError(.truncated, "\(path) ends inside its \(length)-byte .npy header: the file is truncated", path: path)
        }
        let headerBytes = bytes[start..<start + length]
        // 1.0 and 2.0 headers are latin-1 (in practice ASCII); 3.0 headers are UTF-8.
        if major < 3, headerBytes.contains(where: { $0 >= 0x80 }) {
            throw invalid("its header has non-ASCII bytes")
        }
        var literal = PythonLiteralParser(bytes: Array(headerBytes))
        let value: PythonLiteral
        do {
            value = try literal.parseHeader()
        } catch {
            throw invalid("its header dict cannot be read (\(error.reason) at byte \(error.offset))")
        }
        guard case .dict(let entries) = value else { throw invalid("its header is not a dict") }
        var descr: String?
        var fortran: Bool?
        var shape: [Int]?
        for (key, entry) in entries {
            switch (key, entry) {
            case ("descr", .string(let text)): descr = text
            case ("descr", .list):
                throw DatasetError(.unsupportedLayout, "\(path) holds a structured (record) array; save a plain float32 or integer array", path: path)
            case ("fortran_order", .bool(let flag)): fortran = flag
            case ("shape", .tuple(let items)):
                var dims: [Int] = []
                for item in items {
                    guard case .int(let n) = item, n >= 0 else { throw invalid("its shape has a dimension that is not a non-negative integer") }
                    dims.append(n)
                }
                shape = dims
            case ("descr", _), ("fortran_order", _), ("shape", _):
                throw invalid("its header field '\(key)' has the wrong type")
            default:
                continue  // numpy ignores unknown keys too
            }
        }
        guard let descr else { throw invalid("its header has no 'descr'") }
        guard let fortran else { throw invalid("its header has no 'fortran_order'") }
        guard let shape else { throw invalid("its header has no 'shape'") }
        return NumpyHeader(majorVersion: major, minorVersion: minor, descr: descr, fortranOrder: fortran, shape: shape, dataOffset: start + length)
    }
}

extension DatasetImport {
    /// Imports a features array (float32, 2-D: samples × features, C order) and a labels array
    /// (int32 or int64, 1-D: samples) saved with `numpy.save`. Labels must be in [0, classes);
    /// `classes` nil means the largest label + 1. Progress is reported in bytes read.
    public static func numpy(
        features featuresPath: String,
        labels labelsPath: String,
        classes: Int? = nil,
        limits: DatasetLimits = .init(),
        progress: DatasetProgressHandler = { _ in }
    ) throws(DatasetError) -> LabelledSamples {
        if let classes, classes < 1 || classes > DatasetLimits.maximumClassCount {
            throw DatasetError(.invalidArgument, "\(classes) classes: a data set has 1 to \(DatasetLimits.maximumClassCount)")
        }
        let (featureFile, featureHeader) = try openNumpy(featuresPath, limits: limits)
        let (labelFile, labelHeader) = try openNumpy(labelsPath, limits: limits)

        guard let featureType = featureHeader.scalarType, featureType.type == .float32 else {
            let hint = featureHeader.descr.hasSuffix("f8") ? " (float64): save them with x.astype(np.float32)" : ": save them as float32 with x.astype(np.float32)"
            throw DatasetError(.unsupportedLayout, "\(featuresPath) holds '\(featureHeader.descr)' values; features must be float32\(hint)", path: featuresPath)
        }
        guard featureHeader.shape.count == 2 else {
            throw DatasetError(.npyInvalid, "\(featuresPath) has shape \(describe(featureHeader.shape)); features must be a 2-D array (samples, features)", path: featuresPath)
        }
        try checkLength(featureFile, featureHeader, itemSize: 4)
        guard let labelType = labelHeader.scalarType, labelType.type != .float32 else {
            throw DatasetError(.unsupportedLayout, "\(labelsPath) holds '\(labelHeader.descr)' values; labels must be int32 or int64 class indices: save them with y.astype(np.int32)", path: labelsPath)
        }
        guard labelHeader.shape.count == 1 else {
            let hint = labelHeader.shape.count == 2 && labelHeader.shape[1] == 1 ? ": save y.ravel()" : ""
            throw DatasetError(.npyInvalid, "\(labelsPath) has shape \(describe(labelHeader.shape)); labels must be a 1-D array (samples,)\(hint)", path: labelsPath)
        }
        try checkLength(labelFile, labelHeader, itemSize: labelType.type.size)
        let samples = featureHeader.shape[0]
        let width = featureHeader.shape[1]
        guard labelHeader.shape[0] == samples else {
            throw DatasetError(.npyInvalid, "\(featuresPath) has \(samples) samples but \(labelsPath) has \(labelHeader.shape[0]) labels: they must have one label per sample", path: labelsPath)
        }
        guard samples >= 1, samples <= Int(Int32.max) else {
            throw DatasetError(.npyInvalid, "\(featuresPath) has \(samples) samples; a data set holds 1 to 2^31−1", path: featuresPath)
        }
        guard width >= 1, width <= DatasetLimits.maximumFeatureCount else {
            throw DatasetError(.npyInvalid, "\(featuresPath) has \(width) features per sample; a data set has 1 to \(DatasetLimits.maximumFeatureCount)", path: featuresPath)
        }

        let total = (featureFile.length - featureHeader.dataOffset) + (labelFile.length - labelHeader.dataOffset)
        progress(DatasetProgress(phase: .reading, completed: 0, total: total, unit: .bytes))
        var features = try [Float](unsafeUninitializedCapacity: samples * width) { (buffer, initialized) throws(DatasetError) in
            try featureFile.readExactly(into: UnsafeMutableRawBufferPointer(buffer), at: featureHeader.dataOffset)
            initialized = samples * width
        }
        progress(DatasetProgress(phase: .reading, completed: featureFile.length - featureHeader.dataOffset, total: total, unit: .bytes))
        if featureType.littleEndian != hostIsLittleEndian {
            for i in features.indices { features[i] = Float(bitPattern: features[i].bitPattern.byteSwapped) }
        }
        try LabelledSamples.checkFinite(features, featureCount: width, source: featuresPath)

        var labels = [Int32](repeating: 0, count: samples)
        var largest: Int32 = -1
        func accept(_ value: Int64, at i: Int) throws(DatasetError) {
            guard value >= 0, value < Int64(min(classes ?? DatasetLimits.maximumClassCount, DatasetLimits.maximumClassCount)) else {
                let range = classes.map { "0…\($0 - 1) for \($0) classes" } ?? "0…\(DatasetLimits.maximumClassCount - 1)"
                throw DatasetError(.labelOutOfRange, "\(labelsPath): sample \(i) has label \(value), outside \(range)", path: labelsPath)
            }
            labels[i] = Int32(value)
            largest = max(largest, Int32(value))
        }
        if labelType.type == .int32 {
            let raw = try [Int32](unsafeUninitializedCapacity: samples) { (buffer, initialized) throws(DatasetError) in
                try labelFile.readExactly(into: UnsafeMutableRawBufferPointer(buffer), at: labelHeader.dataOffset)
                initialized = samples
            }
            for i in 0..<samples {
                let value = labelType.littleEndian == hostIsLittleEndian ? raw[i] : raw[i].byteSwapped
                try accept(Int64(value), at: i)
            }
        } else {
            let raw = try [Int64](unsafeUninitializedCapacity: samples) { (buffer, initialized) throws(DatasetError) in
                try labelFile.readExactly(into: UnsafeMutableRawBufferPointer(buffer), at: labelHeader.dataOffset)
                initialized = samples
            }
            for i in 0..<samples {
                let value = labelType.littleEndian == hostIsLittleEndian ? raw[i] : raw[i].byteSwapped
                try accept(value, at: i)
            }
        }
        progress(DatasetProgress(phase: .reading, completed: total, total: total, unit: .bytes))
        return LabelledSamples(featureCount: width, classes: classes ?? Int(largest) + 1, features: features, labels: labels)
    }

    /// Reads the header of a `.npy` file (for `inspect`-like tools and tests).
    public static func numpyHeader(_ path: String) throws(DatasetError) -> NumpyHeader {
        try openNumpy(path, limits: .init()).header
    }

    private static var hostIsLittleEndian: Bool {
        #if _endian(big)
        false
        #else
        true
        #endif
    }

    private static func describe(_ shape: [Int]) -> String {
        shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    }

    private static func openNumpy(_ path: String, limits: DatasetLimits) throws(DatasetError) -> (file: ReadableFile, header: NumpyHeader) {
        let file = try ReadableFile(path: path) { path in
            DatasetError(.ioError, "\(path) does not exist: check the path of the .npy file", path: path)
        }
        guard file.length <= limits.maximumImportBytes else {
            throw DatasetError(.tooLarge, "\(path) is \(file.length) bytes, more than the \(limits.maximumImportBytes)-byte import limit", path: path)
        }
        let prefix = try file.readBytes(count: 12, at: 0)
        var headerEnd = prefix.count
        if prefix.count >= 10, Array(prefix[0..<6]) == NumpyHeader.magic {
            let major = prefix[6]
            let lengthSize = major == 1 ? 2 : 4
            if prefix.count >= 8 + lengthSize {
                var length = 0
                for k in 0..<lengthSize { length |= Int(prefix[8 + k]) << (8 * k) }
                headerEnd = 8 + lengthSize + min(length, NumpyHeader.maximumHeaderLength + 1)
            }
        }
        let bytes = try file.readBytes(count: headerEnd, at: 0)
        let header = try NumpyHeader.parse(bytes, path: path)
        if header.fortranOrder {
            throw DatasetError(.unsupportedLayout, "\(path) is stored in Fortran (column-major) order; save it in C order: np.save(path, np.ascontiguousarray(x))", path: path)
        }
        return (file, header)
    }

    private static func checkLength(_ file: ReadableFile, _ header: NumpyHeader, itemSize: Int) throws(DatasetError) {
        let available = file.length - header.dataOffset
        guard let count = header.elementCount, case let (bytes, overflow) = count.multipliedReportingOverflow(by: itemSize), !overflow else {
            throw DatasetError(.npyInvalid, "\(file.path) claims the shape \(describe(header.shape)), too large to be real: the file is corrupted", path: file.path)
        }
        guard available >= bytes else {
            throw DatasetError(.truncated, "\(file.path) holds \(max(available, 0)) bytes of data, but its shape \(describe(header.shape)) of '\(header.descr)' needs \(bytes): the file is truncated", path: file.path)
        }
        guard available == bytes else {
            throw DatasetError(.trailingBytes, "\(file.path) holds \(available - bytes) bytes after its array: it is not a plain .npy file", path: file.path)
        }
    }
}

/// The values a `.npy` header dict may hold.
indirect enum PythonLiteral: Equatable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case none
    case tuple([PythonLiteral])
    case list([PythonLiteral])
    case dict([(String, PythonLiteral)])

    static func == (a: PythonLiteral, b: PythonLiteral) -> Bool {
        switch (a, b) {
        case (.string(let x), .string(let y)): x == y
        case (.int(let x), .int(let y)): x == y
        case (.bool(let x), .bool(let y)): x == y
        case (.none, .none): true
        case (.tuple(let x), .tuple(let y)), (.list(let x), .list(let y)): x == y
        case (.dict(let x), .dict(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }
}

/// A recursive-descent parser for the Python literals numpy writes: dicts with string keys,
/// strings, integers (with an optional Python 2 `L`), True/False/None, tuples and lists.
/// Depth-limited, so a hostile header cannot exhaust the stack.
struct PythonLiteralParser {
    struct Failure: Error {
        var reason: String
        var offset: Int
    }

    let bytes: [UInt8]
    var position = 0
    private let maximumDepth = 16

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// The dict, followed only by whitespace (numpy pads with spaces and ends with a newline).
    mutating func parseHeader() throws(Failure) -> PythonLiteral {
        let value = try parseValue(depth: 0)
        skipWhitespace()
        guard position == bytes.count else { throw Failure(reason: "unexpected text after the dict", offset: position) }
        return value
    }

    private mutating func skipWhitespace() {
        while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
    }

    private mutating func expect(_ byte: UInt8) throws(Failure) {
        skipWhitespace()
        guard position < bytes.count, bytes[position] == byte else {
            throw Failure(reason: "expected '\(Character(Unicode.Scalar(byte)))'", offset: position)
        }
        position += 1
    }

    private mutating func peek() -> UInt8? {
        skipWhitespace()
        return position < bytes.count ? bytes[position] : nil
    }

    private mutating func parseValue(depth: Int) throws(Failure) -> PythonLiteral {
        guard depth < maximumDepth else { throw Failure(reason: "nested too deeply", offset: position) }
        guard let byte = peek() else { throw Failure(reason: "unexpected end", offset: position) }
        switch byte {
        case UInt8(ascii: "{"):
            position += 1
            var entries: [(String, PythonLiteral)] = []
            while true {
                if peek() == UInt8(ascii: "}") { position += 1; break }
                guard case .string(let key) = try parseValue(depth: depth + 1) else {
                    throw Failure(reason: "a dict key that is not a string", offset: position)
                }
                try expect(UInt8(ascii: ":"))
                entries.append((key, try parseValue(depth: depth + 1)))
                if peek() == UInt8(ascii: ",") { position += 1; continue }
                try expect(UInt8(ascii: "}"))
                break
            }
            return .dict(entries)
        case UInt8(ascii: "("), UInt8(ascii: "["):
            let close = byte == UInt8(ascii: "(") ? UInt8(ascii: ")") : UInt8(ascii: "]")
            position += 1
            var items: [PythonLiteral] = []
            while true {
                if peek() == close { position += 1; break }
                items.append(try parseValue(depth: depth + 1))
                if peek() == UInt8(ascii: ",") { position += 1; continue }
                try expect(close)
                break
            }
            return byte == UInt8(ascii: "(") ? .tuple(items) : .list(items)
        case UInt8(ascii: "'"), UInt8(ascii: "\""):
            position += 1
            var text: [UInt8] = []
            while true {
                guard position < bytes.count else { throw Failure(reason: "a string does not end", offset: position) }
                let c = bytes[position]
                position += 1
                if c == byte { break }
                if c == UInt8(ascii: "\\") {
                    guard position < bytes.count else { throw Failure(reason: "a string does not end", offset: position) }
                    text.append(bytes[position])
                    position += 1
                } else {
                    text.append(c)
                }
            }
            return .string(String(decoding: text, as: UTF8.self))
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "+"):
            let start = position
            position += 1
            while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) { position += 1 }
            guard let value = Int(String(decoding: bytes[start..<position], as: UTF8.self)) else {
                throw Failure(reason: "an integer out of range", offset: start)
            }
            if position < bytes.count, bytes[position] == UInt8(ascii: "L") { position += 1 }
            return .int(value)
        default:
            for (word, value) in [("True", PythonLiteral.bool(true)), ("False", .bool(false)), ("None", .none)] {
                let utf8 = Array(word.utf8)
                if bytes.count - position >= utf8.count, Array(bytes[position..<position + utf8.count]) == utf8 {
                    position += utf8.count
                    return value
                }
            }
            throw Failure(reason: "unexpected '\(Character(Unicode.Scalar(byte)))'", offset: position)
        }
    }
}
