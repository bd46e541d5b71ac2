"""Workbooks built in tests: a minimal XLSX writer and the bombs of issue 17 (a merged range over
the whole sheet, millions of plain cells), small on the wire and huge when parsed naively."""

from __future__ import annotations

import io
import zipfile
from typing import Iterable


def workbook(*parts: bytes | Iterable[bytes]) -> bytes:
    """A minimal XLSX whose only sheet, ``Daten``, is the concatenated ``parts`` (bytes, or iterables of
    bytes written one by one, so a large sheet is never whole in memory)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", (
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            'spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType='
            '"application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>'))
        archive.writestr("_rels/.rels", (
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
            'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'))
        archive.writestr("xl/workbook.xml", (
            '<?xml version="1.0"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>'
            '<sheet name="Daten" sheetId="1" r:id="rId1"/></sheets></workbook>'))
        archive.writestr("xl/_rels/workbook.xml.rels", (
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
            'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'))
        with archive.open("xl/worksheets/sheet1.xml", "w") as sheet:
            for part in parts:
                for piece in [part] if isinstance(part, bytes) else part:
                    sheet.write(piece)
    return buffer.getvalue()


SHEET_HEAD = (b'<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
              b'<sheetData>')


def merge_bomb() -> bytes:
    """1.6 KB: one cell merged over the whole sheet, 17 billion cells."""
    return workbook(SHEET_HEAD + b'<row r="1"><c r="A1" t="inlineStr"><is><t>x</t></is></c></row></sheetData>'
                    b'<mergeCells count="1"><mergeCell ref="A1:XFD1048576"/></mergeCells></worksheet>')


def cell_bomb(rows: int = 1000, columns: int = 4096) -> bytes:
    """About 130 KB: 4 million plain cells."""
    row = b"<row>" + b"<c><v>1</v></c>" * columns + b"</row>"
    return workbook(SHEET_HEAD, (row for _ in range(rows)), b"</sheetData></worksheet>")
