"""Rewrites the part of a Markdown page that a tool generates: the text between `<!-- NAME:begin -->` and
`<!-- NAME:end -->`, in place (a temporary file, then a rename). Shared by the benchmark tools."""
import os


def replace_section(path, name, text):
    """Puts `text` between NAME's markers in the file at `path`; raises ValueError without them."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    with open(path) as f:
        doc = f.read()
    if begin not in doc or end not in doc:
        raise ValueError(f"{path}: the markers {begin} and {end} are missing")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path + ".partial", "w") as f:
        f.write(head + begin + "\n" + text + end + tail)
    os.rename(path + ".partial", path)
