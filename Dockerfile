FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir . && useradd --create-home orchestra
USER orchestra
EXPOSE 8000
CMD ["orchestra", "web", "--host", "0.0.0.0", "--port", "8000"]
