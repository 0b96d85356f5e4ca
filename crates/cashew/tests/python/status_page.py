"""The admin status page in a real headless browser (Debian's chromium and
chromedriver, selenium): it shows the pools and servers of a running cashew, its
numbers move under load, a killed server shows as down, and the eject button works
with the admin token and is refused without it.
Usage: status_page.py ADMIN_URL TOKEN POOL_LISTEN KILL_PID"""
import os
import signal
import socket
import sys
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

url, token, listen, kill_pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
host, port = listen.rsplit(":", 1)

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(20)


def wait(what, check, limit=5.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit(f"{what}: not within {limit} s\n{driver.find_element(By.TAG_NAME, 'body').text}")


def rows():
    return {r.get_attribute("data-server"): r for r in driver.find_elements(By.CSS_SELECTOR, "tr.server")}


try:
    driver.get(url + "/")
    wait("the page asks for the token", lambda: "admin token" in driver.find_element(By.ID, "problem").text)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "use-token").click()
    wait("the pool shows", lambda: driver.find_elements(By.ID, "pool-cache"))
    servers = wait("two servers show", lambda: len(rows()) == 2 and rows())
    assert all(r.get_attribute("data-state") == "up" for r in servers.values()), servers
    print("pools and servers render: ok")

    def requests():
        return int(driver.find_element(By.CSS_SELECTOR, '[data-name="requests"]').text)

    before = requests()
    stop = threading.Event()

    def load():
        s = socket.create_connection((host, int(port)))
        while not stop.is_set():
            s.sendall(b"get a\r\nget b\r\n")
            s.recv(4096)
    t = threading.Thread(target=load)
    t.start()
    wait("the request count moves", lambda: requests() > before + 100, 5)
    stop.set()
    t.join()
    print(f"numbers update under load: {before} -> {requests()}: ok")

    os.kill(kill_pid, signal.SIGKILL)
    killed = time.time()
    down = wait("a killed server shows down", lambda: [n for n, r in rows().items() if r.get_attribute("data-state") in ("down", "ejected")], 2.5)
    print(f"killed server {down[0]} shown {rows()[down[0]].get_attribute('data-state')} after {time.time() - killed:.1f} s: ok")

    alive = [n for n in rows() if n not in down][0]
    # Without the token: refused, and nothing changes.
    driver.execute_script("sessionStorage.removeItem('cashew-token')")
    def click(name):
        # The table is redrawn every second: find the button anew until a click lands.
        return wait(f"a click on {name}'s button", lambda: rows()[name].find_element(By.TAG_NAME, "button").click() or True)

    click(alive)
    wait("eject refused without the token", lambda: "refused" in driver.find_element(By.ID, "action").text)
    driver.find_element(By.ID, "token").clear()
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "use-token").click()
    time.sleep(1.2)
    assert rows()[alive].get_attribute("data-state") == "up", rows()[alive].get_attribute("data-state")
    print("eject without the token refused: ok")
    click(alive)
    wait("ejected with the token", lambda: rows()[alive].get_attribute("data-state") == "manual")
    click(alive)
    wait("restored", lambda: rows()[alive].get_attribute("data-state") == "up")
    print("eject and restore with the token: ok")
finally:
    driver.quit()
print("status page: ok")
