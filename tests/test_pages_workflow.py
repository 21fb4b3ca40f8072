""".github/workflows/pages.yml parses and builds the same app that the browser tests serve at a sub-path
(docs/tutorial/react-app -> dist/), with the official Pages actions. GitHub Actions cannot run here, so this
checks the file's structure only; tests/test_tutorial_browser.py checks that the build it uploads works."""
import json
import re

import yaml

from browser_util import APP, DIST, ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "pages.yml"
APP_DIR = APP.relative_to(ROOT).as_posix()


def load() -> dict:
    flow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    flow["on"] = flow.pop(True, flow.get("on"))  # YAML 1.1 reads the bare key `on` as the boolean true
    return flow


def uses(job: dict) -> dict:
    """action name -> step, e.g. "actions/deploy-pages" -> {"uses": "actions/deploy-pages@v4", ...}."""
    return {s["uses"].split("@")[0]: s for s in job["steps"] if "uses" in s}


def test_triggers_on_app_changes_and_may_deploy():
    flow = load()
    push = flow["on"]["push"]
    assert push["branches"] == ["main"] and f"{APP_DIR}/**" in push["paths"]
    assert ".github/workflows/pages.yml" in push["paths"] and "workflow_dispatch" in flow["on"]
    assert flow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}


def test_build_job_tests_and_builds_the_app_folder():
    build = load()["jobs"]["build"]
    assert build["defaults"]["run"]["working-directory"] == APP_DIR
    runs = [s["run"] for s in build["steps"] if "run" in s]
    assert [r.split()[:2] for r in runs] == [["npm", "ci"], ["npm", "run"], ["npx", "vitest"], ["npm", "run"]]
    scripts = json.loads((APP / "package.json").read_text(encoding="utf-8"))["scripts"]
    assert scripts[runs[1].split()[2]] == "eslint . --max-warnings 0"
    assert "vite build" in scripts[runs[3].split()[2]]
    actions = uses(build)
    node = actions["actions/setup-node"]["with"]
    assert node["cache-dependency-path"] == f"{APP_DIR}/package-lock.json" and (APP / "package-lock.json").exists()
    # the same Node major as the Docker build of the app
    docker_node = re.search(r"^FROM node:(\d+)", (ROOT / "Dockerfile.web").read_text(), re.M).group(1)
    assert str(node["node-version"]) == docker_node
    # uploads vite's output folder (no outDir in vite.config.ts), built with a relative base for the sub-path
    vite = (APP / "vite.config.ts").read_text(encoding="utf-8")
    assert "outDir" not in vite and re.search(r'base:\s*"\./"', vite)
    assert actions["actions/upload-pages-artifact"]["with"]["path"] == DIST.relative_to(ROOT).as_posix()
    assert "actions/configure-pages" in actions


def test_deploy_job_publishes_the_artifact():
    jobs = load()["jobs"]
    deploy = jobs["deploy"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    step = uses(deploy)["actions/deploy-pages"]
    assert deploy["environment"]["url"] == "${{ steps.%s.outputs.page_url }}" % step["id"]
    for job in jobs.values():
        for s in job["steps"]:
            if "uses" in s:
                assert re.fullmatch(r"actions/[\w-]+@v\d+", s["uses"]), s["uses"]  # official actions, major tags
