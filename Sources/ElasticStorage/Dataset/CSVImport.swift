/// How `DatasetImport.csv` reads a CSV file (docs/data-format.md, "Importing CSV"):
/// one sample per line, numeric feature columns, one integer class-label column (the last by
/// default), an optional header row, fields separated by a one-byte delimiter (comma), optional
/// double quotes around a field ("" inside quotes is a quote), spaces around fields ignored,
/// blank lines skipped, `\n` or `\r\n` line ends, a UTF-8 byte-order mark ignored.
public struct CSVImportOptions: Sendable, Equatable {
    public enum Header: String, Sendable, CaseIterable {
        /// The first non-blank line is a header when one of its fields is not a number.
        case auto
        /// The first non-blank line is a header.
        case present
        /// Every line is data.
        case absent
    }

    /// Which column holds the class label; every other column is a feature.
    public enum LabelColumn: Sendable, Equatable, CustomStringConvertible {
        case last
        case first
        /// 1-based, as in error messages and `cut -f`.
        case number(Int)
        /// The column with this header name (needs a header row).
        case named(String)

        /// Parses a command-line value: `last`, `first`, a 1-based column number, or a header name.
        public init(argument: String) {
            switch argument {
            case "last": self = .last
            case "first": self = .first
            default:
                if let number = Int(argument) { self = .number(number) } else { self = .named(argument) }
            }
        }

        public var description: String {
            switch self {
            case .last: "the last column"
            case .first: "the first column"
            case .number(let n): "column \(n)"
            case .named(let name): "the column '\(name)'"
            }
        }
    }

    public var header: Header
    public var labelColumn: LabelColumn
    /// One ASCII character other than a quote, a line break or a space.
    public var delimiter: Character
    /// The number of classes; nil means the largest label + 1.
    public var classes: Int?

    public init(header: Header = .auto, labelColumn: LabelColumn = .last, delimiter: Character = ",", classes: Int? = nil) {
        self.header = header
        self.labelColumn = labelColumn
        self.delimiter = delimiter
        self.classes = classes
    }
}

/// Imports of users' data into samples that `Dataset.write` stores.
public enum DatasetImport {
    /// Reads a CSV file of numeric features and an integer class label per line (see
    /// `CSVImportOptions`). Errors name the file, the 1-based line and column, and the field.
    /// Progress is reported in bytes read.
    public static func csv(
        _ path: String,
        options: CSVImportOptions = .init(),
        limits: DatasetLimits = .init(),
        progress: DatasetProgressHandler = { _ in }
    ) throws(DatasetError) -> LabelledSamples {
        guard let delimiter = options.delimiter.asciiValue, delimiter != UInt8(ascii: "\""), delimiter != 0x0A, delimiter != 0x0D, delimiter != 0x20 else {
            throw DatasetError(.invalidArgument, "the CSV delimiter must be one ASCII character other than a quote, a space or a line break, not '\(options.delimiter)'")
        }
        if let classes = options.classes, classes < 1 || classes > DatasetLimits.maximumClassCount {
            throw DatasetError(.invalidArgument, "\(classes) classes: a data set has 1 to \(DatasetLimits.maximumClassCount)")
        }
        let file = try ReadableFile(path: path) { path in
            DatasetError(.ioError, "\(path) does not exist: check the path of the CSV file", path: path)
        }
        guard file.length <= limits.maximumImportBytes else {
            throw DatasetError(.tooLarge, "\(path) is \(file.length) bytes, more than the \(limits.maximumImportBytes)-byte import limit", path: path)
        }
        var parser = CSVParser(path: path, options: options, delimiter: delimiter)
        let chunkSize = 1 << 20
        var pending: [UInt8] = []
        var offset = 0
        progress(DatasetProgress(phase: .parsing, completed: 0, total: file.length, unit: .bytes))
        while true {
            let chunk = try file.readBytes(count: chunkSize, at: offset)
            offset += chunk.count
            if chunk.isEmpty { break }
            if offset == chunk.count, chunk.starts(with: [0xEF, 0xBB, 0xBF]) {
                pending.append(contentsOf: chunk.dropFirst(3))
            } else {
                pending.append(contentsOf: chunk)
            }
            // Parse every complete line; keep the rest for the next chunk.
            if let lastNewline = pending.lastIndex(of: 0x0A) {
                try parser.parseLines(pending[...lastNewline])
                pending.removeSubrange(...lastNewline)
            }
            progress(DatasetProgress(phase: .parsing, completed: min(offset, file.length), total: file.length, unit: .bytes))
        }
        if !pending.isEmpty { try parser.parseLines(pending[...]) }
        return try parser.finish()
    }
}

/// The CSV state machine: lines in, samples out.
struct CSVParser {
    let path: String
    let options: CSVImportOptions
    let delimiter: UInt8
    private(set) var lineNumber = 0
    private var sawFirstRow = false
    private var columns = 0
    private var labelIndex = 0
    private var firstDataLine = 0
    private var features: [Float] = []
    private var labels: [Int32] = []
    private var largestLabel: Int32 = -1
    private var fields: [Range<Int>] = []

    init(path: String, options: CSVImportOptions, delimiter: UInt8) {
        self.path = path
        self.options = options
        self.delimiter = delimiter
    }

    private func error(_ line: Int, _ column: Int?, _ text: String) -> DatasetError {
        let place = column.map { "line \(line), column \($0)" } ?? "line \(line)"
        return DatasetError(.csvInvalid, "\(path), \(place): \(text)", path: path, line: line, column: column)
    }

    /// Parses complete lines (the slice may end without a newline only at the end of the file).
    mutating func parseLines(_ bytes: ArraySlice<UInt8>) throws(DatasetError) {
        var start = bytes.startIndex
        while start < bytes.endIndex {
            var end = start
            while end < bytes.endIndex && bytes[end] != 0x0A { end += 1 }
            lineNumber += 1
            var lineEnd = end
            if lineEnd > start && bytes[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            try parseLine(bytes[start..<lineEnd])
            start = end + 1
        }
    }

    private static func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }

    /// Splits a line into field byte ranges (relative to the line's start, quotes removed later).
    private mutating func split(_ line: ArraySlice<UInt8>) throws(DatasetError) {
        fields.removeAll(keepingCapacity: true)
        let base = line.startIndex
        var i = line.startIndex
        var column = 1
        while true {
            let fieldStart = i
            var inQuotes = false
            while i < line.endIndex {
                let byte = line[i]
                if byte == UInt8(ascii: "\"") {
                    inQuotes.toggle()
                } else if byte == delimiter && !inQuotes {
                    break
                }
                i += 1
            }
            if inQuotes {
                throw error(lineNumber, column, "a quoted field does not end on this line (quoted fields with line breaks are not supported)")
            }
            fields.append((fieldStart - base)..<(i - base))
            if i == line.endIndex { break }
            i += 1  // the delimiter
            column += 1
        }
    }

    /// The text of a field: blanks around it trimmed, surrounding quotes removed, "" unescaped.
    private func text(_ line: ArraySlice<UInt8>, _ range: Range<Int>, column: Int) throws(DatasetError) -> String {
        var lower = line.startIndex + range.lowerBound
        var upper = line.startIndex + range.upperBound
        while lower < upper && Self.isBlank(line[lower]) && line[lower] != delimiter { lower += 1 }
        while upper > lower && Self.isBlank(line[upper - 1]) && line[upper - 1] != delimiter { upper -= 1 }
        let raw = line[lower..<upper]
        guard raw.contains(UInt8(ascii: "\"")) else { return String(decoding: raw, as: UTF8.self) }
        guard raw.count >= 2, raw.first == UInt8(ascii: "\""), raw.last == UInt8(ascii: "\"") else {
            throw error(lineNumber, column, "a quote inside an unquoted field: quote the whole field (\"…\") and double the quotes in it")
        }
        var out: [UInt8] = []
        var k = raw.startIndex + 1
        while k < raw.endIndex - 1 {
            if raw[k] == UInt8(ascii: "\"") {
                guard k + 1 < raw.endIndex - 1, raw[k + 1] == UInt8(ascii: "\"") else {
                    throw error(lineNumber, column, "a lone quote inside a quoted field: write \"\" for a quote")
                }
                k += 1
            }
            out.append(raw[k])
            k += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    private mutating func parseLine(_ line: ArraySlice<UInt8>) throws(DatasetError) {
        if line.allSatisfy(Self.isBlank) { return }
        try split(line)
        if !sawFirstRow {
            sawFirstRow = true
            try startTable(line)
            if firstDataLine != lineNumber { return }
        }
        guard fields.count == columns else {
            throw error(lineNumber, nil, "\(fields.count) columns, but line \(firstDataLine) has \(columns): every row needs the same columns")
        }
        for (index, range) in fields.enumerated() {
            let column = index + 1
            let value = try text(line, range, column: column)
            if index == labelIndex {
                labels.append(try label(value, column: column))
            } else {
                guard let number = Float(value) else {
                    throw error(lineNumber, column, value.isEmpty ? "the field is empty; every feature needs a number" : "'\(Self.clip(value))' is not a number")
                }
                guard number.isFinite else {
                    throw error(lineNumber, column, "'\(Self.clip(value))' is not a finite float32 number; features must be finite")
                }
                features.append(number)
            }
        }
        if labels.count > Int(Int32.max) {
            throw error(lineNumber, nil, "more than 2^31−1 samples; a data set can index no more")
        }
    }

    /// Decides on the header and the label column from the first non-blank line.
    private mutating func startTable(_ line: ArraySlice<UInt8>) throws(DatasetError) {
        columns = fields.count
        guard columns >= 2 else {
            throw error(lineNumber, nil, "\(columns) column; a CSV data set needs at least one feature column and a label column (is the delimiter '\(Character(Unicode.Scalar(delimiter)))' right?)")
        }
        var names: [String] = []
        for (index, range) in fields.enumerated() { names.append(try text(line, range, column: index + 1)) }
        let isHeader: Bool
        switch options.header {
        case .present: isHeader = true
        case .absent: isHeader = false
        case .auto: isHeader = names.contains { !$0.isEmpty && Float($0) == nil }
        }
        firstDataLine = isHeader ? lineNumber + 1 : lineNumber
        switch options.labelColumn {
        case .last: labelIndex = columns - 1
        case .first: labelIndex = 0
        case .number(let n):
            guard n >= 1, n <= columns else {
                throw error(lineNumber, nil, "the label column is \(n), but rows have \(columns) columns: choose 1 to \(columns)")
            }
            labelIndex = n - 1
        case .named(let name):
            guard isHeader else {
                throw error(lineNumber, nil, "the label column is named '\(name)', but the file has no header row (line \(lineNumber) is data): give the column number instead")
            }
            guard let index = names.firstIndex(of: name) else {
                throw error(lineNumber, nil, "the header has no column '\(name)'; its columns are \(names.prefix(12).map { "'\($0)'" }.joined(separator: ", "))\(names.count > 12 ? ", …" : "")")
            }
            labelIndex = index
        }
        if columns - 1 > DatasetLimits.maximumFeatureCount {
            throw error(lineNumber, nil, "\(columns - 1) feature columns, more than the \(DatasetLimits.maximumFeatureCount) allowed")
        }
    }

    private mutating func label(_ value: String, column: Int) throws(DatasetError) -> Int32 {
        var parsed = Int32(value)
        if parsed == nil, let real = Double(value), real.rounded() == real, real.magnitude < 2_147_483_648 {
            parsed = Int32(real)
        }
        guard let label = parsed else {
            throw error(lineNumber, column, value.isEmpty ? "the label is empty; every row needs an integer class label" : "the label '\(Self.clip(value))' is not an integer class (labels are 0, 1, …, classes−1)")
        }
        guard label >= 0 else {
            throw error(lineNumber, column, "the label \(label) is negative; class labels are 0, 1, …, classes−1")
        }
        if let classes = options.classes, Int(label) >= classes {
            throw error(lineNumber, column, "the label \(label) is not below the \(classes) classes given: labels must be 0…\(classes - 1)")
        }
        if Int(label) >= DatasetLimits.maximumClassCount {
            throw error(lineNumber, column, "the label \(label) implies more than the \(DatasetLimits.maximumClassCount) classes allowed")
        }
        largestLabel = max(largestLabel, label)
        return label
    }

    private static func clip(_ text: String) -> String {
        text.count > 40 ? String(text.prefix(40)) + "…" : text
    }

    func finish() throws(DatasetError) -> LabelledSamples {
        guard !labels.isEmpty else {
            throw DatasetError(.csvInvalid, "\(path) has no data rows\(sawFirstRow ? " (only a header)" : ""): nothing to import", path: path)
        }
        let classes = options.classes ?? Int(largestLabel) + 1
        return LabelledSamples(featureCount: columns - 1, classes: classes, features: features, labels: labels)
    }
}
