import ElasticStorage
import Foundation
import Testing

@Suite struct DatasetCSVImportTests {
    private func importCSV(_ text: String, _ options: CSVImportOptions = .init(), name: String = "data.csv") throws -> LabelledSamples {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file(name)
        try writeBytes(Array(text.utf8), to: path)
        return try DatasetImport.csv(path, options: options)
    }

    /// Runs an import expected to fail; checks the code, the line and column, and that the
    /// message names the file.
    private func expectCSVError(_ text: String, _ options: CSVImportOptions = .init(), code: DatasetError.Code = .csvInvalid, line: Int?, column: Int?, mentioning: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("bad.csv")
        try writeBytes(Array(text.utf8), to: path)
        do {
            _ = try DatasetImport.csv(path, options: options)
            Issue.record("expected \(code) for \(text.debugDescription)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == code, "\(error.message)", sourceLocation: sourceLocation)
            #expect(error.line == line && error.column == column, "\(error.message)", sourceLocation: sourceLocation)
            #expect(error.message.contains(path), "\(error.message)", sourceLocation: sourceLocation)
            #expect(error.message.contains(mentioning), "\(error.message)", sourceLocation: sourceLocation)
            if let line { #expect(error.message.contains("line \(line)"), "\(error.message)", sourceLocation: sourceLocation) }
        }
    }

    @Test func headerAutoDetectedAndLastColumnIsTheLabel() throws {
        let samples = try importCSV("a,b,label\n1,2.5,0\n-3e2, 4 ,2\n\n0.1,0x1p-3,1\n")
        #expect(samples.featureCount == 2 && samples.classes == 3)
        #expect(samples.features == [1, 2.5, -300, 4, 0.1, 0.125])
        #expect(samples.labels == [0, 2, 1])
    }

    @Test func conventionsAndOptions() throws {
        // No header: the first line is data.
        var samples = try importCSV("1,2,1\n3,4,0\n")
        #expect(samples.count == 2 && samples.labels == [1, 0])
        // Forced header, label first, semicolons, CRLF, a byte-order mark, quotes, classes given.
        samples = try importCSV("\u{FEFF}\"y\";\"x 1\";\"x;2\"\r\n\"3\";1;\"2\"\r\n0;5;6", CSVImportOptions(header: .present, labelColumn: .first, delimiter: ";", classes: 5))
        #expect(samples.featureCount == 2 && samples.classes == 5)
        #expect(samples.features == [1, 2, 5, 6] && samples.labels == [3, 0])
        // A numeric header is still a header when told so.
        samples = try importCSV("1,2,3\n4,5,1\n", CSVImportOptions(header: .present))
        #expect(samples.count == 1 && samples.labels == [1])
        // Column by number (1-based) and by name; integral floats are accepted as labels.
        samples = try importCSV("f1,species,f2\n1.5,2.0,7\n2.5,0,8\n", CSVImportOptions(labelColumn: .number(2)))
        #expect(samples.features == [1.5, 7, 2.5, 8] && samples.labels == [2, 0])
        samples = try importCSV("f1,species,f2\n1.5,2,7\n", CSVImportOptions(labelColumn: .named("species")))
        #expect(samples.labels == [2] && samples.classes == 3)
        // Tabs.
        samples = try importCSV("1\t2\t0\n", CSVImportOptions(delimiter: "\t"))
        #expect(samples.features == [1, 2])
        #expect(CSVImportOptions.LabelColumn(argument: "last") == .last)
        #expect(CSVImportOptions.LabelColumn(argument: "3") == .number(3))
        #expect(CSVImportOptions.LabelColumn(argument: "species") == .named("species"))
    }

    @Test func badInputsNameTheLineAndColumn() throws {
        try expectCSVError("a,b,y\n1,2,0\n1,abc,1\n", line: 3, column: 2, mentioning: "'abc' is not a number")
        try expectCSVError("1,2,0\n1,,1\n", line: 2, column: 2, mentioning: "empty")
        try expectCSVError("1,2,0\n1,2\n", line: 2, column: nil, mentioning: "2 columns, but line 1 has 3")
        try expectCSVError("1,2,0\n1,2,-1\n", line: 2, column: 3, mentioning: "negative")
        try expectCSVError("1,2,0\n1,2,1.5\n", line: 2, column: 3, mentioning: "not an integer")
        try expectCSVError("1,2,0\n1,2,4\n", CSVImportOptions(classes: 3), line: 2, column: 3, mentioning: "not below the 3 classes")
        try expectCSVError("1,nan,0\n", line: 1, column: 2, mentioning: "finite")
        try expectCSVError("1,1e39,0\n", line: 1, column: 2, mentioning: "finite")
        try expectCSVError("1,\"2,0\n", line: 1, column: 2, mentioning: "quoted field")
        try expectCSVError("1,2\"3,0\n", line: 1, column: 2, mentioning: "quote")
        try expectCSVError("a,b,y\n", line: nil, column: nil, mentioning: "no data rows")
        try expectCSVError("", line: nil, column: nil, mentioning: "no data rows")
        try expectCSVError("1;2;0\n", line: 1, column: nil, mentioning: "delimiter")
        try expectCSVError("1,2,0\n", CSVImportOptions(labelColumn: .named("y")), line: 1, column: nil, mentioning: "no header row")
        try expectCSVError("a,b,y\n1,2,0\n", CSVImportOptions(labelColumn: .named("z")), line: 1, column: nil, mentioning: "'a', 'b', 'y'")
        try expectCSVError("1,2,0\n", CSVImportOptions(labelColumn: .number(4)), line: 1, column: nil, mentioning: "choose 1 to 3")
        expectDatasetError(.ioError, mentioning: "/nonexistent/x.csv") { try DatasetImport.csv("/nonexistent/x.csv") }
        expectDatasetError(.invalidArgument, mentioning: "delimiter") { try DatasetImport.csv("/nonexistent/x.csv", options: CSVImportOptions(delimiter: "\"")) }
    }

    /// A file larger than the 1 MiB read chunk: lines across chunk boundaries, exact values, and
    /// progress that ends at the file size. Values are printed with Swift's shortest
    /// round-trip form, so they parse back to the same floats.
    @Test func largeFileRoundTripsExactly() throws {
        let data = sampleData(count: 8000, features: 16, classes: 7, seed: 31)
        var text = (1...16).map { "f\($0)" }.joined(separator: ",") + ",class\n"
        for i in 0..<data.count {
            text += data.features(of: i).map { "\($0)" }.joined(separator: ",") + ",\(data.labels[i])\n"
        }
        #expect(text.utf8.count > 1 << 20)
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("big.csv")
        try writeBytes(Array(text.utf8), to: path)
        var reports: [DatasetProgress] = []
        let samples = try DatasetImport.csv(path) { reports.append($0) }
        #expect(samples.features == data.features && samples.labels == data.labels)
        #expect(samples.classes == Int(data.labels.max()!) + 1)
        #expect(reports.count >= 3 && reports.last?.completed == text.utf8.count && reports.last?.fraction == 1)
    }
}

@Suite struct DatasetNumpyImportTests {
    /// A `.npy` file as numpy writes it: magic, version, header length, the dict padded with
    /// spaces to a multiple of 64 bytes and ended by a newline, then the data.
    private func npy(descr: String, fortran: Bool = false, shape: String, data: [UInt8], major: UInt8 = 1, dict: String? = nil) -> [UInt8] {
        let text = dict ?? "{'descr': '\(descr)', 'fortran_order': \(fortran ? "True" : "False"), 'shape': \(shape), }"
        let prefix = 8 + (major == 1 ? 2 : 4)
        var header = Array(text.utf8)
        while (prefix + header.count + 1) % 64 != 0 { header.append(0x20) }
        header.append(0x0A)
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [major, 0]
        let length = header.count
        bytes += major == 1 ? [UInt8(length & 0xFF), UInt8(length >> 8)] : [UInt8(length & 0xFF), UInt8(length >> 8 & 0xFF), 0, 0]
        return bytes + header + data
    }

    private func int64Bytes(_ values: [Int64]) -> [UInt8] {
        values.flatMap { value in withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    }

    @Test(arguments: [UInt8(1), 2, 3])
    func readsOwnFiles(major: UInt8) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let features: [Float] = [1, 2, 3, 4.5, -5, 6]
        try writeBytes(npy(descr: "<f4", shape: "(3, 2)", data: littleEndianBytes(features), major: major), to: directory.file("x.npy"))
        try writeBytes(npy(descr: "<i8", shape: "(3,)", data: int64Bytes([2, 0, 1]), major: major), to: directory.file("y.npy"))
        let samples = try DatasetImport.numpy(features: directory.file("x.npy"), labels: directory.file("y.npy"))
        #expect(samples == LabelledSamples(featureCount: 2, classes: 3, features: features, labels: [2, 0, 1]))
        let header = try DatasetImport.numpyHeader(directory.file("x.npy"))
        #expect(header.majorVersion == major && header.shape == [3, 2] && header.descr == "<f4" && header.dataOffset % 64 == 0)
    }

    @Test func bigEndianAndInt32Labels() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let features: [Float] = [0.5, -2, 8, 1e-3]
        let bigEndian = features.flatMap { value in withUnsafeBytes(of: value.bitPattern.bigEndian) { Array($0) } }
        try writeBytes(npy(descr: ">f4", shape: "(2L, 2L)", data: bigEndian), to: directory.file("x.npy"))
        try writeBytes(npy(descr: "<i4", shape: "(2,)", data: littleEndianBytes([Int32(1), 0])), to: directory.file("y.npy"))
        let samples = try DatasetImport.numpy(features: directory.file("x.npy"), labels: directory.file("y.npy"), classes: 4)
        #expect(samples.features == features && samples.labels == [1, 0] && samples.classes == 4)
    }

    /// Files written by numpy itself (np.save: format 1.0; write_array: 2.0 and 3.0).
    @Test func readsFilesNumpyWrote() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let script = """
        import numpy as np, sys
        d = sys.argv[1]
        x = (np.arange(7 * 5, dtype=np.float32).reshape(7, 5) / np.float32(7)) - np.float32(2)
        y = np.arange(7) % 3
        np.save(d + '/x.npy', x)
        np.save(d + '/y64.npy', y.astype(np.int64))
        np.save(d + '/y32.npy', y.astype(np.int32))
        x.tofile(d + '/x.raw')
        for version in ((2, 0), (3, 0)):
            with open(d + '/x%d.npy' % version[0], 'wb') as f:
                np.lib.format.write_array(f, x, version=version)
        np.save(d + '/xf.npy', np.asfortranarray(x))
        np.save(d + '/x64.npy', x.astype(np.float64))
        np.save(d + '/y2d.npy', y.reshape(7, 1))
        np.save(d + '/yf.npy', y.astype(np.float32))
        np.save(d + '/rec.npy', np.zeros(7, dtype=[('a', '<f4'), ('b', '<i4')]))
        """
        try #require(runPython(["-c", script, directory.path]).ok)
        let raw = readBytes(directory.file("x.raw"))
        for (features, labels) in [("x.npy", "y64.npy"), ("x.npy", "y32.npy"), ("x2.npy", "y64.npy"), ("x3.npy", "y32.npy")] {
            let samples = try DatasetImport.numpy(features: directory.file(features), labels: directory.file(labels))
            #expect(littleEndianBytes(samples.features) == raw, "\(features)")
            #expect(samples.labels == [0, 1, 2, 0, 1, 2, 0] && samples.featureCount == 5 && samples.classes == 3)
        }
        let x = directory.file("x.npy")
        let y = directory.file("y64.npy")
        expectDatasetError(.unsupportedLayout, mentioning: "Fortran") { try DatasetImport.numpy(features: directory.file("xf.npy"), labels: y) }
        expectDatasetError(.unsupportedLayout, mentioning: "astype(np.float32)") { try DatasetImport.numpy(features: directory.file("x64.npy"), labels: y) }
        expectDatasetError(.npyInvalid, mentioning: "y.ravel()") { try DatasetImport.numpy(features: x, labels: directory.file("y2d.npy")) }
        expectDatasetError(.unsupportedLayout, mentioning: "int32 or int64") { try DatasetImport.numpy(features: x, labels: directory.file("yf.npy")) }
        expectDatasetError(.unsupportedLayout, mentioning: "structured") { try DatasetImport.numpy(features: directory.file("rec.npy"), labels: y) }
        expectDatasetError(.unsupportedLayout, mentioning: "features must be float32") { try DatasetImport.numpy(features: y, labels: y) }
        expectDatasetError(.labelOutOfRange, mentioning: "sample 2 has label 2") { try DatasetImport.numpy(features: x, labels: y, classes: 2) }
    }

    @Test func refusesMalformedFiles() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let x = directory.file("x.npy")
        let y = directory.file("y.npy")
        let xData = littleEndianBytes([Float](repeating: 1, count: 6))
        try writeBytes(npy(descr: "<i8", shape: "(3,)", data: int64Bytes([0, 1, 0])), to: y)
        func expectFeatures(_ bytes: [UInt8], _ code: DatasetError.Code, _ mentioning: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            try writeBytes(bytes, to: x)
            expectDatasetError(code, mentioning: mentioning, sourceLocation: sourceLocation) { try DatasetImport.numpy(features: x, labels: y) }
            expectDatasetError(code, mentioning: x, sourceLocation: sourceLocation) { try DatasetImport.numpy(features: x, labels: y) }
        }
        try expectFeatures(Array("not numpy at all".utf8), .badMagic, "\\x93NUMPY")
        try expectFeatures([0x93, 0x4E, 0x55], .truncated, "too short")
        try expectFeatures(npy(descr: "<f4", shape: "(3, 2)", data: xData, major: 4), .unsupportedVersion, "4.0")
        try expectFeatures(npy(descr: "<f4", shape: "(3, 2)", data: Array(xData.dropLast(3))), .truncated, "truncated")
        try expectFeatures(npy(descr: "<f4", shape: "(3, 2)", data: xData + [0]), .trailingBytes, "after its array")
        try expectFeatures(npy(descr: "<f4", shape: "(4, 2)", data: xData), .truncated, "needs 32")
        try expectFeatures(npy(descr: "<f4", shape: "(3, 2)", data: xData, dict: "{'descr': '<f4', 'shape': (3, 2)}"), .npyInvalid, "fortran_order")
        try expectFeatures(npy(descr: "<f4", shape: "(3, 2)", data: xData, dict: "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2)"), .npyInvalid, "cannot be read")
        try expectFeatures(npy(descr: "<f4", shape: "(3, 2)", data: xData, dict: "{'descr': '<f4', 'fortran_order': False, 'shape': (3, -2)}"), .npyInvalid, "non-negative")
        try expectFeatures(npy(descr: "<f4", shape: "(3, 2)", data: xData, dict: "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2)}; import os"), .npyInvalid, "after the dict")
        try expectFeatures(npy(descr: "<f4", shape: "(3, 2)", data: xData, dict: "{'descr': '<f4', 'fortran_order': False, 'shape': " + String(repeating: "(", count: 100) + "}"), .npyInvalid, "nested too deeply")
        try expectFeatures(npy(descr: "<f4", shape: "(4611686018427387904, 4611686018427387904)", data: xData), .npyInvalid, "too large")
        try expectFeatures(npy(descr: "<f4", shape: "(3, 2)", data: xData, dict: "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 2)}"), .npyInvalid, "out of range")
        try expectFeatures(npy(descr: "<f4", shape: "(2, 3)", data: xData), .npyInvalid, "3 labels")
        try expectFeatures(npy(descr: "<f4", shape: "(6,)", data: xData), .npyInvalid, "2-D")
        try expectFeatures(npy(descr: "<f4", shape: "(3, 2)", data: littleEndianBytes([1, 2, .infinity, 4, 5, 6] as [Float])), .nonFiniteFeature, "sample 1")
        // A header length beyond the limit is refused without reading it.
        var huge = npy(descr: "<f4", shape: "(3, 2)", data: xData, major: 2)
        huge[8...11] = [0, 0, 0, 0x7F]
        try expectFeatures(huge, .npyInvalid, "more than")
        // Labels: out of int32 range, negative.
        try writeBytes(npy(descr: "<f4", shape: "(3, 2)", data: xData), to: x)
        try writeBytes(npy(descr: "<i8", shape: "(3,)", data: int64Bytes([0, 1 << 40, 0])), to: y)
        expectDatasetError(.labelOutOfRange, mentioning: "sample 1 has label 1099511627776") { try DatasetImport.numpy(features: x, labels: y) }
        try writeBytes(npy(descr: "<i4", shape: "(3,)", data: littleEndianBytes([Int32(0), 0, -1])), to: y)
        expectDatasetError(.labelOutOfRange, mentioning: "sample 2 has label -1") { try DatasetImport.numpy(features: x, labels: y) }
        expectDatasetError(.ioError, mentioning: "does not exist") { try DatasetImport.numpy(features: directory.file("none.npy"), labels: y) }
    }
}
