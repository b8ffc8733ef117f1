import ElasticNumerics

/// Writes checkpoints as NumPy `.npz` files: a ZIP archive (method "stored", no compression) of
/// `.npy` version 1.0 arrays, which `numpy.load(path)` opens as a dict of arrays.
///
/// Array names: `step` (int64 scalar), and per layer i `layer<i>.optimizer_step` (int64
/// scalar), `layer<i>.<tensor>` for every tensor of its state (`layer0.weight` [fanIn, fanOut],
/// `layer0.bias`, `layer0.weight.velocity`, …) and every extra, as little-endian float32 in C
/// order with the shape the checkpoint records.
public enum CheckpointExport {
    /// One array of an npz file.
    public struct NPZArray: Sendable, Equatable {
        public enum Values: Sendable, Equatable {
            case float32([Float])
            case int64(Int64)
        }

        public var name: String
        /// [] for a scalar.
        public var shape: [Int]
        public var values: Values

        public init(name: String, shape: [Int], values: Values) {
            self.name = name
            self.shape = shape
            self.values = values
        }
    }

    /// The arrays `writeNPZ` writes for `checkpoint`, in file order.
    public static func arrays(of checkpoint: LoadedCheckpoint) throws(CheckpointError) -> [NPZArray] {
        var arrays = [NPZArray(name: "step", shape: [], values: .int64(Int64(checkpoint.manifest.step)))]
        var names: Set<String> = ["step"]
        for layer in checkpoint.layers {
            let prefix = "layer\(layer.index)."
            var layerArrays = [NPZArray(name: prefix + "optimizer_step", shape: [], values: .int64(Int64(layer.state.optimizerStep)))]
            for tensor in layer.state.tensors + layer.extras {
                layerArrays.append(NPZArray(name: prefix + tensor.name, shape: tensor.shape, values: .float32(tensor.values)))
            }
            for array in layerArrays {
                guard names.insert(array.name).inserted else {
                    throw CheckpointError(.exportUnsupported, "cannot export \(checkpoint.path): two arrays would be named \(array.name) (a tensor of layer \(layer.index) is called optimizer_step?)", path: checkpoint.path)
                }
            }
            arrays += layerArrays
        }
        return arrays
    }

    /// Writes `checkpoint` to `path` as an npz (temporary name, fsync, rename). Throws
    /// `.exportUnsupported` past the limits of a plain ZIP (4 GiB, 65 535 arrays).
    public static func writeNPZ(_ checkpoint: LoadedCheckpoint, to path: String) throws(CheckpointError) {
        try writeNPZ(arrays(of: checkpoint), to: path)
    }

    /// Writes `arrays` to `path` as an npz.
    public static func writeNPZ(_ arrays: [NPZArray], to path: String) throws(CheckpointError) {
        guard arrays.count < 0xFFFF else {
            throw CheckpointError(.exportUnsupported, "\(arrays.count) arrays do not fit in a plain ZIP (at most 65 534); export fewer layers", path: path)
        }
        var central: [UInt8] = []
        var offset = 0
        let file: AtomicFileWriter
        do throws(DatasetError) {
            file = try AtomicFileWriter(path: path, uniqueTemporaryName: true)
        } catch {
            throw CheckpointError(io: error, doing: "cannot create \(path)")
        }
        do throws(CheckpointError) {
            for array in arrays {
                let name = Array((array.name + ".npy").utf8)
                let header = npyHeader(array)
                let written = try withData(array) { (data) throws(CheckpointError) -> Int in
                    let size = header.count + data.count
                    guard size < 0xFFFF_FFFF, offset + 30 + name.count + size < 0xFFFF_FFFF else {
                        throw CheckpointError(.exportUnsupported, "\(path) would exceed 4 GiB, the limit of a plain ZIP (ZIP64 is not written); export fewer layers", path: path)
                    }
                    var crc = CRC32()
                    crc.update(header)
                    crc.update(data)
                    var local = ZIP.localHeader(name: name, crc: crc.value, size: UInt32(size))
                    central += ZIP.centralHeader(name: name, crc: crc.value, size: UInt32(size), localOffset: UInt32(offset))
                    local += header
                    try write(local, to: file, path: path)
                    try write(data, to: file, path: path)
                    return local.count + data.count
                }
                offset += written
            }
            guard offset + central.count + 22 < 0xFFFF_FFFF else {
                throw CheckpointError(.exportUnsupported, "\(path) would exceed 4 GiB, the limit of a plain ZIP; export fewer layers", path: path)
            }
            let end = ZIP.endOfCentralDirectory(entries: UInt16(arrays.count), size: UInt32(central.count), offset: UInt32(offset))
            try write(central + end, to: file, path: path)
        } catch {
            // A failed write has already abandoned (closed and removed) the temporary file.
            if error.kind != .io { file.abandon() }
            throw error
        }
        do throws(DatasetError) {
            try file.commit()
        } catch {
            throw CheckpointError(io: error, doing: "cannot write \(path)")
        }
    }

    /// The `.npy` 1.0 header: magic, version, length, a Python dict literal padded with spaces and
    /// ended by a newline so that the data starts at a multiple of 64 bytes.
    static func npyHeader(_ array: NPZArray) -> [UInt8] {
        let descr: String
        switch array.values {
        case .float32: descr = "<f4"
        case .int64: descr = "<i8"
        }
        let shape = array.shape.isEmpty ? "()" : array.shape.count == 1 ? "(\(array.shape[0]),)" : "(" + array.shape.map(String.init).joined(separator: ", ") + ")"
        var dict = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }".utf8)
        let unpadded = 10 + dict.count + 1
        dict += Array(repeating: UInt8(ascii: " "), count: (64 - unpadded % 64) % 64)
        dict.append(UInt8(ascii: "\n"))
        var header: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0]
        header += ZIP.le16(UInt16(dict.count))
        return header + dict
    }

    private static func withData<R>(_ array: NPZArray, _ body: (UnsafeRawBufferPointer) throws(CheckpointError) -> R) throws(CheckpointError) -> R {
        switch array.values {
        case .float32(let values):
            return try withLittleEndianBytes(values, body)
        case .int64(let value):
            let bytes = ZIP.le64(UInt64(bitPattern: value))
            return try withRawBytes(bytes) { (raw) throws(CheckpointError) in try body(raw) }
        }
    }

    private static func write(_ bytes: [UInt8], to file: AtomicFileWriter, path: String) throws(CheckpointError) {
        try withRawBytes(bytes) { (raw) throws(CheckpointError) in try write(raw, to: file, path: path) }
    }

    private static func write(_ bytes: UnsafeRawBufferPointer, to file: AtomicFileWriter, path: String) throws(CheckpointError) {
        do throws(DatasetError) {
            try file.write(bytes)
        } catch {
            throw CheckpointError(io: error, doing: "cannot write \(path)")
        }
    }
}

/// The few ZIP records a "stored" archive needs (PKWARE APPNOTE 4.3.7, 4.3.12, 4.3.16).
private enum ZIP {
    /// 1980-01-01 00:00, the earliest MS-DOS date: the export is reproducible byte for byte.
    static let dosTime: UInt16 = 0
    static let dosDate: UInt16 = (1 << 5) | 1
    /// 2.0: the minimum for a plain stored file.
    static let version: UInt16 = 20

    static func le16(_ value: UInt16) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8)] }
    static func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8((value >> (8 * $0)) & 0xFF) } }
    static func le64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8((value >> (8 * $0)) & 0xFF) } }

    static func localHeader(name: [UInt8], crc: UInt32, size: UInt32) -> [UInt8] {
        le32(0x0403_4B50) + le16(version) + le16(0) + le16(0) + le16(dosTime) + le16(dosDate)
            + le32(crc) + le32(size) + le32(size) + le16(UInt16(name.count)) + le16(0) + name
    }

    static func centralHeader(name: [UInt8], crc: UInt32, size: UInt32, localOffset: UInt32) -> [UInt8] {
        le32(0x0201_4B50) + le16(version) + le16(version) + le16(0) + le16(0) + le16(dosTime) + le16(dosDate)
            + le32(crc) + le32(size) + le32(size) + le16(UInt16(name.count)) + le16(0) + le16(0)
            + le16(0) + le16(0) + le32(0) + le32(localOffset) + name
    }

    static func endOfCentralDirectory(entries: UInt16, size: UInt32, offset: UInt32) -> [UInt8] {
        le32(0x0605_4B50) + le16(0) + le16(0) + le16(entries) + le16(entries) + le32(size) + le32(offset) + le16(0)
    }
}
