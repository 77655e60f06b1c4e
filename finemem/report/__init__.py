"""Reports of audited runs: terminal tables (`tables`), PNG plots (`plots`) and the
self-contained HTML report (`html`, `finemem report RUN_DIR`), built from sections
(`finemem.report.sections`: one module per section; each probe contributes its own).

    from finemem.report.html import write_report
    write_report(["runs/demo"])        # -> runs/demo/report/index.html
"""
