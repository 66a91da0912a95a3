"""Rebuild the fixture files of tests/test_bad_inputs.py (the table is cases.json, kept by hand).

    .venv/bin/python tests/data/bad_cli/make_fixtures.py

Deterministic: the same files every time (gzip without a timestamp, fixed zip dates, the model
trained with SOURCE_DATE_EPOCH and a fixed seed).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
N = 48  # rows of the good monthly series: enough for --horizon 3 --lookback 6


def months(n: int, start_year: int = 2018) -> list[str]:
    return [f"{start_year + m // 12}-{m % 12 + 1:02d}-01" for m in range(n)]


def series(n: int = N) -> list[float]:
    return [round(100 + 10 * math.sin(2 * math.pi * i / 12) + 0.5 * i, 3) for i in range(n)]


def csv_text(rows, header="date,value", sep=",", eol="\n") -> str:
    return eol.join([header] + [sep.join(str(v) for v in r) for r in rows]) + eol


def good_rows(n: int = N):
    return list(zip(months(n), series(n), strict=True))


def gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as f:
        f.write(data)
    return buf.getvalue()


def with_bad_value(value: str, row: int = 20) -> str:
    rows = good_rows()
    rows[row] = (rows[row][0], value)
    return csv_text(rows)


def write(name: str, data) -> None:
    (HERE / name).write_bytes(data.encode() if isinstance(data, str) else data)


def main() -> None:
    good = csv_text(good_rows())
    write("good.csv", good)

    # --- refused CSVs ---
    write("empty.csv", b"")
    write("whitespace_only.csv", "  \n\t\n   \n")
    write("header_only.csv", "date,value\n")
    write("binary.csv", bytes(range(256)) * 4)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        for name in ("[Content_Types].xml", "xl/workbook.xml", "xl/worksheets/sheet1.xml"):
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), "<xml/>")
    write("xlsx_saved_as.csv", zbuf.getvalue())
    write("html_page.csv", "<!DOCTYPE html>\n<html><head><title>Export</title></head>\n"
                           "<body><table><tr><td>date</td><td>value</td></tr></table></body></html>\n")
    write("json_page.csv", '[{"date": "2018-01-01", "value": 1.0},\n {"date": "2018-02-01", "value": 2.0}]\n')
    whole = gz(good.encode())
    write("truncated.csv.gz", whole[: len(whole) // 2])
    write("missing_target.csv", csv_text(good_rows(), header="date,sales"))
    write("duplicate_columns.csv", csv_text([(d, v, v) for d, v in good_rows()], header="date,value,value"))
    ragged = good.splitlines()
    ragged[30] += ",7"
    write("ragged_row.csv", "\n".join(ragged) + "\n")
    write("na_lowercase.csv", with_bad_value("n/a"))
    write("thousands_separator.csv", with_bad_value('"1,234"'))
    write("unit_in_value.csv", with_bad_value("12 kWh"))
    write("em_dash.csv", with_bad_value("\u2014"))
    write("infinite.csv", with_bad_value("inf"))
    mixed = good_rows()
    mixed[25] = ("01/02/2020", mixed[25][1])  # the same month, written d/m/Y among ISO dates
    write("mixed_date_formats.csv", csv_text(mixed))
    dup = good_rows()
    dup[11] = (dup[10][0], dup[11][1])
    write("duplicate_time.csv", csv_text(dup))
    write("too_short.csv", csv_text(good_rows(10)))

    # --- CSVs that must work ---
    write("bom.csv", "\ufeff" + good)
    write("crlf.csv", csv_text(good_rows(), eol="\r\n"))
    write("good.csv.gz", whole)
    write("quoted_newlines.csv", csv_text([(d, v, f'"note {i}\nsecond line, with a comma"')
                                           for i, (d, v) in enumerate(good_rows())], header="date,value,note"))
    write("semicolon.csv", csv_text(good_rows(), header="date;value", sep=";"))
    write("scientific.csv", csv_text([(d, f"{v:.6e}") for d, v in good_rows()]))
    unsorted = good_rows()
    order = sorted(range(N), key=lambda i: (i * 7919) % N)  # a fixed shuffle
    write("unsorted.csv", csv_text([unsorted[i] for i in order]))
    write("constant.csv", csv_text([(d, 42.0) for d, _ in good_rows()]))
    write("huge_magnitude.csv", csv_text([(d, f"{v / 100:.6f}e300") for d, v in good_rows()]))
    write("tiny_magnitude.csv", csv_text([(d, f"{v / 100:.6f}e-300") for d, v in good_rows()]))

    # --- model files: one good model, then broken copies of it ---
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    lstm = Path(sys.executable).with_name("lstm")
    with tempfile.TemporaryDirectory() as tmp:  # (the run leaves a .lock beside its output)
        model = Path(tmp) / "good.lstm"
        subprocess.run([str(lstm), "train", str(HERE / "good.csv"), "--target", "value", "--horizon", "3",
                        "--lookback", "6", "--epochs", "2", "--hidden", "4", "--threads", "1", "-q",
                        "--out", str(model)], check=True, env=env)
        data = model.read_bytes()
    write("truncated_model.lstm", data[: len(data) * 2 // 3])
    flipped = bytearray(data)
    flipped[-5] ^= 0x40  # a bit in the last weight: the payload checksum no longer matches
    write("bitflip_model.lstm", bytes(flipped))
    write("csv_as_model.lstm", good)
    write("empty_model.lstm", b"")


if __name__ == "__main__":
    main()
