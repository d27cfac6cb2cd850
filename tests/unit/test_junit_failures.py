"""The end of a failed `make test` names the failed tests (Makefile, molecule)."""

import junit_failures

REPORT = """<testsuites><testsuite>
<testcase classname="test_default" name="test_reboot[ansible://h]"><failure message="assert 'STARTING' == 'RUNNING'&#10;  - RUNNING">tb</failure></testcase>
<testcase classname="test_apply" name="test_ok"/>
<testcase classname="test_deploy" name="test_setup"><error message="fixture failed">tb</error></testcase>
</testsuite></testsuites>"""


def test_failed_and_errored_tests_are_named_with_their_message(tmp_path):
    path = tmp_path / "default.xml"
    path.write_text(REPORT)
    assert junit_failures.failures(str(path)) == [
        "FAILURE test_default::test_reboot[ansible://h]: assert 'STARTING' == 'RUNNING' - RUNNING",
        "ERROR test_deploy::test_setup: fixture failed",
    ]
